package server

import (
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
)

// guard refuses with 403 the requests a browser may send on behalf of a web
// page the user did not mean to give the API to: an Origin header that is
// neither the server's own nor one of Options.CORSOrigins (a page POSTing
// text/plain to http://127.0.0.1:8080 needs no preflight), and, when the
// server listens on a loopback address (local), a Host header that is not a
// loopback name or address (a page whose DNS name was rebound to
// 127.0.0.1). Clients that are not browsers send no Origin and the Host
// they connect to.
func (s *Server) guard(local net.Addr, next http.Handler) http.Handler {
	checkHost := local != nil && isLoopbackAddr(local)
	anyOrigin := slices.Contains(s.opts.CORSOrigins, "*")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if checkHost && !loopbackHost(r.Host) {
			writeError(w, newAPIError(http.StatusForbidden, typePermission, "host_not_allowed", "",
				"the Host %q is not a loopback name or address, and this server listens on %s only", r.Host, local))
			return
		}
		if origin := r.Header.Get("Origin"); origin != "" && !anyOrigin &&
			!sameOrigin(origin, r.Host) && !slices.Contains(s.opts.CORSOrigins, origin) {
			writeError(w, newAPIError(http.StatusForbidden, typePermission, "origin_not_allowed", "",
				"requests from the origin %q are not allowed; start the server with --cors-origin %s to allow them", origin, origin))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// isLoopbackAddr reports whether a listener's address is a loopback one.
func isLoopbackAddr(a net.Addr) bool {
	if t, ok := a.(*net.TCPAddr); ok {
		return t.IP.IsLoopback()
	}
	ap, err := netip.ParseAddrPort(a.String())
	return err == nil && ap.Addr().IsLoopback()
}

// loopbackHost reports whether a Host header names this machine through a
// loopback address: a loopback IP, localhost, a *.localhost name, or the
// machine's own host name (Debian maps it to 127.0.1.1). An absent Host
// (HTTP/1.0) passes.
func loopbackHost(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.ToLower(strings.TrimSuffix(strings.Trim(host, "[]"), "."))
	if host == "" || host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		return ip.IsLoopback()
	}
	name := hostName()
	return name != "" && host == name
}

var hostName = sync.OnceValue(func() string {
	name, _ := os.Hostname()
	return strings.ToLower(name)
})

// sameOrigin reports whether a browser's Origin is the server's own: the
// scheme http or https and the host and port of the request's Host.
func sameOrigin(origin, host string) bool {
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" || u.User != nil || (u.Path != "" && u.Path != "/") {
		return false
	}
	port := ""
	switch u.Scheme {
	case "http":
		port = "80"
	case "https":
		port = "443"
	default:
		return false
	}
	return strings.EqualFold(withPort(u.Host, port), withPort(host, port))
}

// withPort adds the default port to a host that has none.
func withPort(host, port string) string {
	if _, _, err := net.SplitHostPort(host); err == nil {
		return host
	}
	return net.JoinHostPort(strings.Trim(host, "[]"), port)
}

// bearerToken returns the credentials of an "Authorization: Bearer TOKEN"
// header; the scheme is case-insensitive (RFC 7235).
func bearerToken(header string) (string, bool) {
	scheme, token, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	return strings.TrimLeft(token, " "), true
}

// handlerCount counts the handlers running, so that Serve can wait for
// every one to return before the backend they use is closed.
type handlerCount struct {
	mu   sync.Mutex
	n    int
	idle chan struct{} // closed when n drops to 0; nil while nobody waits
}

func (c *handlerCount) track(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.mu.Lock()
		c.n++
		c.mu.Unlock()
		defer func() {
			c.mu.Lock()
			c.n--
			if c.n == 0 && c.idle != nil {
				close(c.idle)
				c.idle = nil
			}
			c.mu.Unlock()
		}()
		next.ServeHTTP(w, r)
	})
}

// wait returns a channel closed once no handler runs.
func (c *handlerCount) wait() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == 0 {
		done := make(chan struct{})
		close(done)
		return done
	}
	if c.idle == nil {
		c.idle = make(chan struct{})
	}
	return c.idle
}
