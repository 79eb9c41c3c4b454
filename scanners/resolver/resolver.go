// Package resolver is the one DNS resolver of the daemon: a stub resolver
// that asks a recursive server over UDP (TCP when the answer is truncated),
// caches answers for their TTL and reports every failure as a
// *net.DNSError. Its methods match *net.Resolver, so it plugs into
// blitiri.com.ar/go/spf as a DNSResolver; Fake does the same from maps,
// for tests.
//
// Errors are returned unwrapped, because callers such as the SPF library
// type-assert err.(*net.DNSError): IsNotFound for NXDOMAIN and for a name
// without records of the type (NODATA), IsTimeout for timeouts and
// expired contexts, IsTemporary for every other failure.
package resolver

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
)

const (
	defaultTimeout   = 5 * time.Second
	defaultCacheSize = 10000

	resolvConf     = "/etc/resolv.conf"
	fallbackServer = "127.0.0.1:53" // what glibc uses without resolv.conf

	// ednsSize is our UDP payload size (RFC 6891), the DNS flag day 2020
	// value: large enough for most answers, small enough not to fragment.
	ednsSize = 1232
)

// Config says where and how to resolve.
type Config struct {
	// Server is the recursive server, "host:port" or "host" for port 53.
	// Empty means the nameservers of /etc/resolv.conf, tried in order.
	Server string
	// Timeout bounds each lookup, retries included; 5s if zero.
	Timeout time.Duration
	// CacheSize is how many answers the cache keeps; 10000 if zero.
	CacheSize int
}

// Resolver is a caching stub resolver. It is safe for concurrent use.
type Resolver struct {
	servers []string
	timeout time.Duration
	udp     *dns.Client
	tcp     *dns.Client

	now     func() time.Time // the cache's clock, replaced in tests
	cache   *cache
	flights flights

	hits, misses atomic.Uint64
}

// New returns a Resolver for cfg.
func New(cfg Config) (*Resolver, error) {
	if cfg.Timeout < 0 || cfg.CacheSize < 0 {
		return nil, fmt.Errorf("resolver: negative timeout %v or cache size %d", cfg.Timeout, cfg.CacheSize)
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = defaultTimeout
	}
	if cfg.CacheSize == 0 {
		cfg.CacheSize = defaultCacheSize
	}
	// The clients' Timeout caps each exchange; without it miekg/dns
	// would give up reading after its own 2s default.
	return &Resolver{
		servers: servers(cfg.Server),
		timeout: cfg.Timeout,
		udp:     &dns.Client{Net: "udp", Timeout: cfg.Timeout},
		tcp:     &dns.Client{Net: "tcp", Timeout: cfg.Timeout},
		now:     time.Now,
		cache:   newCache(cfg.CacheSize),
		flights: flights{m: map[key]*flight{}},
	}, nil
}

// servers returns the addresses to query for the configured server.
func servers(server string) []string {
	if server != "" {
		if _, _, err := net.SplitHostPort(server); err != nil {
			server = net.JoinHostPort(strings.Trim(server, "[]"), "53")
		}
		return []string{server}
	}
	cc, err := dns.ClientConfigFromFile(resolvConf)
	if err != nil || len(cc.Servers) == 0 {
		return []string{fallbackServer}
	}
	var addrs []string
	for _, s := range cc.Servers {
		addrs = append(addrs, net.JoinHostPort(s, cc.Port))
	}
	return addrs
}

// Stats returns how many lookups the cache answered and how many it did
// not.
func (r *Resolver) Stats() (hits, misses uint64) {
	return r.hits.Load(), r.misses.Load()
}

// LookupTXT returns the TXT records of name, one string per record.
func (r *Resolver) LookupTXT(ctx context.Context, name string) ([]string, error) {
	rrs, err := r.lookup(ctx, name, dns.TypeTXT)
	if err != nil {
		return nil, err
	}
	var txts []string
	for _, rr := range rrs {
		if t, ok := rr.(*dns.TXT); ok {
			// RFC 7208 3.3: the character-strings of one record are
			// joined with nothing in between.
			txts = append(txts, strings.Join(t.Txt, ""))
		}
	}
	return txts, nil
}

// LookupMX returns the MX records of name, lowest preference first
// (RFC 5321 5.1). Hosts are absolute, with the trailing dot.
func (r *Resolver) LookupMX(ctx context.Context, name string) ([]*net.MX, error) {
	rrs, err := r.lookup(ctx, name, dns.TypeMX)
	if err != nil {
		return nil, err
	}
	var mxs []*net.MX
	for _, rr := range rrs {
		if mx, ok := rr.(*dns.MX); ok {
			mxs = append(mxs, &net.MX{Host: mx.Mx, Pref: mx.Preference})
		}
	}
	slices.SortStableFunc(mxs, func(a, b *net.MX) int { return int(a.Pref) - int(b.Pref) })
	return mxs, nil
}

// LookupIPAddr returns the IPv4 and IPv6 addresses of host, IPv4 first.
// The A and AAAA queries run concurrently. If either fails with anything
// but not-found the lookup fails: a flaky network must not make a
// dual-stack host look single-stack to SPF's "a" and "mx" mechanisms
// (net.Resolver's StrictErrors).
func (r *Resolver) LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error) {
	if ip := net.ParseIP(host); ip != nil {
		return []net.IPAddr{{IP: ip}}, nil // as net.Resolver does
	}
	type result struct {
		rrs []dns.RR
		err error
	}
	six := make(chan result, 1)
	go func() {
		rrs, err := r.lookup(ctx, host, dns.TypeAAAA)
		six <- result{rrs, err}
	}()
	four, err4 := r.lookup(ctx, host, dns.TypeA)
	res6 := <-six

	for _, err := range []error{err4, res6.err} {
		if err != nil && !isNotFound(err) {
			return nil, err
		}
	}
	if err4 != nil && res6.err != nil {
		return nil, err4
	}
	var addrs []net.IPAddr
	// Two loops rather than append(four, res6.rrs...), which could write
	// into a slice the cache shares.
	for _, rrs := range [][]dns.RR{four, res6.rrs} {
		for _, rr := range rrs {
			switch rr := rr.(type) {
			case *dns.A:
				addrs = append(addrs, net.IPAddr{IP: slices.Clone(rr.A)})
			case *dns.AAAA:
				addrs = append(addrs, net.IPAddr{IP: slices.Clone(rr.AAAA)})
			}
		}
	}
	return addrs, nil
}

// LookupAddr returns the names that the PTR records of the IP address
// addr point to, absolute with the trailing dot.
func (r *Resolver) LookupAddr(ctx context.Context, addr string) ([]string, error) {
	arpa, err := dns.ReverseAddr(addr)
	if err != nil {
		return nil, &net.DNSError{Err: "unrecognized address", Name: addr}
	}
	rrs, err := r.lookup(ctx, arpa, dns.TypePTR)
	if err != nil {
		if derr, ok := err.(*net.DNSError); ok {
			derr.Name = addr // what the caller asked about, not arpa
		}
		return nil, err
	}
	var names []string
	for _, rr := range rrs {
		if ptr, ok := rr.(*dns.PTR); ok {
			names = append(names, ptr.Ptr)
		}
	}
	return names, nil
}

// lookup returns the records of qtype for name, from the cache or from a
// query shared with concurrent lookups of the same name and type.
func (r *Resolver) lookup(ctx context.Context, name string, qtype uint16) ([]dns.RR, error) {
	if err := ctx.Err(); err != nil {
		return nil, ctxError(name, err)
	}
	// Names compare case-insensitively (RFC 4343).
	k := key{strings.ToLower(dns.Fqdn(name)), qtype}
	if _, ok := dns.IsDomainName(k.name); !ok {
		return nil, notFound(name, errNoSuchHost)
	}
	if a, ok := r.cache.get(k, r.now()); ok {
		r.hits.Add(1)
		return a.result(name)
	}
	r.misses.Add(1)

	f := r.flights.start(k, func() answer { return r.resolve(ctx, k) })
	select {
	case <-f.done:
		return f.ans.result(name)
	case <-ctx.Done():
		return nil, ctxError(name, ctx.Err())
	}
}

// resolve asks the servers in turn until one answers, and caches the
// answer.
func (r *Resolver) resolve(ctx context.Context, k key) answer {
	// Other lookups may be waiting for this query and its answer is
	// cached, so the caller that started it giving up must not cancel
	// it; each caller stops waiting on its own context instead.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.timeout)
	defer cancel()

	var a answer
	for _, server := range r.servers {
		a = r.query(ctx, server, k)
		// A timeout used up the time of the lookup: no other server
		// could answer in time.
		if a.err == nil || a.err.IsNotFound || a.err.IsTimeout {
			break
		}
	}
	// SERVFAIL and timeouts are not cached (a.ttl is zero): concurrent
	// lookups already share one query, the recursive server caches its
	// own failures (RFC 9520), and caching them here would only make an
	// outage last longer than it does.
	if a.ttl > 0 {
		r.cache.put(k, a, r.now().Add(a.ttl))
	}
	return a
}

// query asks one server about k.
func (r *Resolver) query(ctx context.Context, server string, k key) answer {
	q := new(dns.Msg)
	q.SetQuestion(k.name, k.qtype)
	q.SetEdns0(ednsSize, false)

	// miekg/dns checks the answer's ID.
	in, _, err := r.udp.ExchangeContext(ctx, q, server)
	if err == nil && in.Truncated {
		// RFC 7766 5: a truncated answer is retried over TCP.
		in, _, err = r.tcp.ExchangeContext(ctx, q, server)
	}
	if err != nil {
		return answer{err: exchangeError(ctx, server, err)}
	}
	// RFC 5452 3: the answer must also be to our question.
	if len(in.Question) != 1 || !strings.EqualFold(in.Question[0].Name, k.name) || in.Question[0].Qtype != k.qtype {
		return answer{err: &net.DNSError{Err: "answer to another question", Server: server, IsTemporary: true}}
	}

	switch in.Rcode {
	case dns.RcodeSuccess:
		if rrs, ttl := pick(in.Answer, k); len(rrs) > 0 {
			return answer{rrs: rrs, ttl: time.Duration(ttl) * time.Second}
		}
		return answer{err: &net.DNSError{Err: errNoRecords, Server: server, IsNotFound: true}, ttl: negativeTTL(in)}
	case dns.RcodeNameError:
		return answer{err: &net.DNSError{Err: errNoSuchHost, Server: server, IsNotFound: true}, ttl: negativeTTL(in)}
	default:
		return answer{err: &net.DNSError{Err: errServer + ": " + dns.RcodeToString[in.Rcode], Server: server, IsTemporary: true}}
	}
}

// pick returns the records of k's type at the end of the CNAME chain that
// starts at k's name (a recursive server sends the chain, RFC 1034 4.3.1),
// and the lowest TTL of the records used.
func pick(answer []dns.RR, k key) ([]dns.RR, uint32) {
	name, ttl := k.name, uint32(math.MaxUint32)
	// Each step uses another CNAME of the answer, so more steps than
	// records means a loop.
	for range len(answer) + 1 {
		var rrs []dns.RR
		var cname *dns.CNAME
		for _, rr := range answer {
			h := rr.Header()
			switch {
			case !strings.EqualFold(h.Name, name):
				// Another link of the chain.
			case h.Rrtype == k.qtype:
				rrs = append(rrs, rr)
				ttl = min(ttl, h.Ttl)
			case h.Rrtype == dns.TypeCNAME && cname == nil:
				cname = rr.(*dns.CNAME)
			}
		}
		if len(rrs) > 0 || cname == nil {
			return rrs, ttl
		}
		ttl = min(ttl, cname.Hdr.Ttl)
		name = cname.Target
	}
	return nil, 0
}

const (
	maxNegativeTTL = time.Hour
	// noSOATTL is for negative answers without an SOA. RFC 2308 5 says
	// not to cache them, against loops between caching servers; we are
	// the last cache, so a short TTL only saves repeated queries.
	noSOATTL = time.Minute
)

// negativeTTL returns how long a negative answer may be cached: the lower
// of the SOA's TTL and MINIMUM field (RFC 2308 5), at most an hour.
func negativeTTL(in *dns.Msg) time.Duration {
	for _, rr := range in.Ns {
		if soa, ok := rr.(*dns.SOA); ok {
			return min(time.Duration(min(soa.Hdr.Ttl, soa.Minttl))*time.Second, maxNegativeTTL)
		}
	}
	return noSOATTL
}

// exchangeError turns an error of miekg/dns into a DNSError.
func exchangeError(ctx context.Context, server string, err error) *net.DNSError {
	var nerr net.Error
	if ctx.Err() != nil || errors.As(err, &nerr) && nerr.Timeout() {
		return &net.DNSError{Err: errTimeout, Server: server, IsTimeout: true, IsTemporary: true, UnwrapErr: err}
	}
	return &net.DNSError{Err: err.Error(), Server: server, IsTemporary: true, UnwrapErr: err}
}

func isNotFound(err error) bool {
	derr, ok := err.(*net.DNSError)
	return ok && derr.IsNotFound
}
