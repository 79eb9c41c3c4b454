package resolver

import (
	"context"
	"net"
	"slices"
	"strings"
	"time"
)

// Fake is a resolver answering from maps, for tests of any package. It has
// the methods of Resolver and fails the same way.
//
// Names are matched case-insensitively, without the trailing dot. A name
// without an entry, or with an empty one, is not found. Errors[name] is
// returned as is, before any record; build it with NotFound, ServFail or
// Timeout. The maps must not change while lookups run.
type Fake struct {
	TXT    map[string][]string
	MX     map[string][]*net.MX
	IP     map[string][]net.IP
	Addr   map[string][]string // PTR names by IP address
	Errors map[string]error

	// Delay is how long every lookup takes, to test timeouts.
	Delay time.Duration
}

// LookupTXT returns TXT[name].
func (f *Fake) LookupTXT(ctx context.Context, name string) ([]string, error) {
	return lookup(ctx, f, f.TXT, name)
}

// LookupMX returns MX[name].
func (f *Fake) LookupMX(ctx context.Context, name string) ([]*net.MX, error) {
	return lookup(ctx, f, f.MX, name)
}

// LookupIPAddr returns IP[host].
func (f *Fake) LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error) {
	ips, err := lookup(ctx, f, f.IP, host)
	if err != nil {
		return nil, err
	}
	addrs := make([]net.IPAddr, len(ips))
	for i, ip := range ips {
		addrs[i] = net.IPAddr{IP: ip}
	}
	return addrs, nil
}

// LookupAddr returns Addr[addr].
func (f *Fake) LookupAddr(ctx context.Context, addr string) ([]string, error) {
	return lookup(ctx, f, f.Addr, addr)
}

// lookup answers a question about name from records, as Fake documents.
// The caller gets a copy of the slice.
func lookup[T any](ctx context.Context, f *Fake, records map[string][]T, name string) ([]T, error) {
	if err := ctx.Err(); err != nil {
		return nil, ctxError(name, err)
	}
	if f.Delay > 0 {
		t := time.NewTimer(f.Delay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return nil, ctxError(name, ctx.Err())
		}
	}
	if err, ok := find(f.Errors, name); ok {
		return nil, err
	}
	if v, _ := find(records, name); len(v) > 0 {
		return slices.Clone(v), nil
	}
	return nil, NotFound(name)
}

// find returns m's value for name, comparing names as Fake documents.
func find[V any](m map[string]V, name string) (V, bool) {
	name = strings.TrimSuffix(name, ".")
	for k, v := range m {
		if strings.EqualFold(strings.TrimSuffix(k, "."), name) {
			return v, true
		}
	}
	var zero V
	return zero, false
}
