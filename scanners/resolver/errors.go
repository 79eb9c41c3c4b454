package resolver

import "net"

// The Err texts of our DNSErrors; all but errNoRecords are net.Resolver's.
const (
	errNoSuchHost = "no such host"
	errNoRecords  = "no records"
	errTimeout    = "i/o timeout"
	errServer     = "server misbehaving"
)

// NotFound returns the error of a lookup of a name that does not exist.
func NotFound(name string) error {
	return notFound(name, errNoSuchHost)
}

// ServFail returns the error of a lookup that the server failed (SERVFAIL).
func ServFail(name string) error {
	return &net.DNSError{Err: errServer + ": SERVFAIL", Name: name, IsTemporary: true}
}

// Timeout returns the error of a lookup that got no answer in time.
func Timeout(name string) error {
	return &net.DNSError{Err: errTimeout, Name: name, IsTimeout: true, IsTemporary: true}
}

func notFound(name, msg string) *net.DNSError {
	return &net.DNSError{Err: msg, Name: name, IsNotFound: true}
}

// ctxError returns the error of a lookup whose context ended; err,
// context.Canceled or DeadlineExceeded, stays reachable with errors.Is.
func ctxError(name string, err error) *net.DNSError {
	return &net.DNSError{Err: err.Error(), Name: name, IsTimeout: true, IsTemporary: true, UnwrapErr: err}
}
