//go:build !linux

package main

import "syscall"

// smallWindow is nil off Linux: the non-reading client keeps the system's
// default receive window, and a server buffers more for it before its
// writes block.
var smallWindow func(network, address string, c syscall.RawConn) error
