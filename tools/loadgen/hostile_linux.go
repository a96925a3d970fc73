//go:build linux

package main

import "syscall"

// smallWindow is a net.Dialer Control that shrinks a connection's receive
// side before it connects: a 536-byte MSS and a 4 KiB receive buffer. A
// server then buffers about 130 KB for a client that stops reading before
// its writes block, instead of the 3-4 MB it buffers on a loopback
// connection otherwise.
func smallWindow(_, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		if serr == nil {
			serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_MAXSEG, 536)
		}
	})
	if err != nil {
		return err
	}
	return serr
}
