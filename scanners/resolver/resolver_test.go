package resolver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"blitiri.com.ar/go/spf"
	"github.com/miekg/dns"
	"github.com/mxguard/mxguard/internal/testdns"
)

var (
	_ spf.DNSResolver = (*Resolver)(nil)
	_ spf.DNSResolver = (*Fake)(nil)
)

// bigTXT is one TXT record of 1500 bytes, which only fits over TCP.
var bigTXT = strings.Repeat("x", 1500)

var zone = `
$ORIGIN example.com.
$TTL 300
@        SOA   ns hostmaster 1 3600 600 86400 120
@        MX    20 mx2
@        MX    10 mx1
split    TXT   "one" "two" "three"
split    TXT   "second"
dual     A     192.0.2.30
dual     AAAA  2001:db8::30
v4only   A     192.0.2.40
alias    CNAME dual
short 1  TXT   "short-lived"
big      TXT   ` + splitTXT(bigTXT) + `
half     A     192.0.2.50
30.2.0.192.in-addr.arpa. PTR dual.example.com.
` + mustReverse("2001:db8::30") + ` PTR dual.example.com.
;! servfail broken.example.com
;! drop slow.example.com

; No SOA for example.net, so negative answers have none.
nosoa.example.net. A 192.0.2.60
`

// splitTXT writes s as the 255-byte character-strings of one TXT record.
func splitTXT(s string) string {
	var b strings.Builder
	for len(s) > 255 {
		fmt.Fprintf(&b, "%q ", s[:255])
		s = s[255:]
	}
	fmt.Fprintf(&b, "%q", s)
	return b.String()
}

func mustReverse(ip string) string {
	arpa, err := dns.ReverseAddr(ip)
	if err != nil {
		panic(err)
	}
	return arpa
}

// clock is a settable clock for the cache.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// setup starts a server for zone and returns a Resolver using it, with
// cfg's Timeout and CacheSize and a clock the test moves.
func setup(t testing.TB, zone string, cfg Config) (*Resolver, *testdns.Server, *clock) {
	t.Helper()
	srv, err := testdns.Start(zone)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	cfg.Server = srv.Addr()
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c := &clock{t: time.Unix(1_000_000, 0)}
	r.now = c.now
	return r, srv, c
}

type errKind int

const (
	noError errKind = iota
	notFoundErr
	temporaryErr // temporary, not a timeout
	timeoutErr
	otherErr // neither not found nor temporary
)

func (k errKind) String() string {
	return [...]string{"no error", "not found", "temporary", "timeout", "other"}[k]
}

// kind classifies err the way blitiri spf does: by type assertion, not
// errors.As, so a wrapped DNSError is "other".
func kind(err error) errKind {
	if err == nil {
		return noError
	}
	derr, ok := err.(*net.DNSError)
	switch {
	case !ok:
		return otherErr
	case derr.IsNotFound && !derr.Temporary():
		return notFoundErr
	case derr.IsTimeout && derr.IsTemporary:
		return timeoutErr
	case derr.IsTemporary && !derr.IsNotFound:
		return temporaryErr
	}
	return otherErr
}

// lookupFunc runs one kind of lookup and renders its results as strings.
type lookupFunc func(ctx context.Context, r spf.DNSResolver, name string) ([]string, error)

func txt(ctx context.Context, r spf.DNSResolver, name string) ([]string, error) {
	return r.LookupTXT(ctx, name)
}

func mx(ctx context.Context, r spf.DNSResolver, name string) ([]string, error) {
	mxs, err := r.LookupMX(ctx, name)
	var out []string
	for _, mx := range mxs {
		out = append(out, fmt.Sprintf("%d %s", mx.Pref, mx.Host))
	}
	return out, err
}

func ip(ctx context.Context, r spf.DNSResolver, name string) ([]string, error) {
	addrs, err := r.LookupIPAddr(ctx, name)
	var out []string
	for _, a := range addrs {
		out = append(out, a.IP.String())
	}
	return out, err
}

func ptr(ctx context.Context, r spf.DNSResolver, addr string) ([]string, error) {
	return r.LookupAddr(ctx, addr)
}

func TestLookup(t *testing.T) {
	r, _, _ := setup(t, zone, Config{Timeout: time.Second})
	tests := []struct {
		desc   string
		lookup lookupFunc
		name   string
		want   []string
		err    errKind
	}{
		{"TXT strings concatenated", txt, "split.example.com", []string{"onetwothree", "second"}, noError},
		{"TXT case-insensitive, absolute", txt, "SPLIT.Example.COM.", []string{"onetwothree", "second"}, noError},
		{"TXT over TCP", txt, "big.example.com", []string{bigTXT}, noError},
		{"MX sorted", mx, "example.com", []string{"10 mx1.example.com.", "20 mx2.example.com."}, noError},
		{"A and AAAA", ip, "dual.example.com", []string{"192.0.2.30", "2001:db8::30"}, noError},
		{"A only", ip, "v4only.example.com", []string{"192.0.2.40"}, noError},
		{"CNAME followed", ip, "alias.example.com", []string{"192.0.2.30", "2001:db8::30"}, noError},
		{"IP literal", ip, "192.0.2.1", []string{"192.0.2.1"}, noError},
		{"PTR IPv4", ptr, "192.0.2.30", []string{"dual.example.com."}, noError},
		{"PTR IPv6", ptr, "2001:db8::30", []string{"dual.example.com."}, noError},
		{"PTR not an address", ptr, "dual.example.com", nil, otherErr},
		{"PTR missing", ptr, "192.0.2.31", nil, notFoundErr},
		{"NXDOMAIN", txt, "nx.example.com", nil, notFoundErr},
		{"NODATA", txt, "dual.example.com", nil, notFoundErr},
		{"NODATA after CNAME", txt, "alias.example.com", nil, notFoundErr},
		{"NXDOMAIN A and AAAA", ip, "nx.example.com", nil, notFoundErr},
		{"NODATA MX", mx, "dual.example.com", nil, notFoundErr},
		{"invalid name", txt, strings.Repeat("x", 64) + ".example.com", nil, notFoundErr},
		{"SERVFAIL TXT", txt, "broken.example.com", nil, temporaryErr},
		{"SERVFAIL A and AAAA", ip, "broken.example.com", nil, temporaryErr},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			got, err := tc.lookup(t.Context(), r, tc.name)
			if k := kind(err); k != tc.err {
				t.Fatalf("err = %v (%s), want %s", err, k, tc.err)
			}
			if err != nil && err.(*net.DNSError).Name != tc.name {
				t.Errorf("error names %q, want %q", err.(*net.DNSError).Name, tc.name)
			}
			if strings.Join(got, "|") != strings.Join(tc.want, "|") {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

// TestLookupIPAddrStrict checks that a failed AAAA query fails the lookup
// even though the A query succeeded.
func TestLookupIPAddrStrict(t *testing.T) {
	r, srv, _ := setup(t, zone, Config{Timeout: time.Second})
	if _, err := r.lookup(t.Context(), "half.example.com", dns.TypeA); err != nil {
		t.Fatal(err)
	}
	srv.SetServFail("half.example.com") // the A answer stays cached
	if got, err := r.LookupIPAddr(t.Context(), "half.example.com"); kind(err) != temporaryErr {
		t.Errorf("LookupIPAddr = %v, %v; want a temporary error", got, err)
	}
}

func TestTimeout(t *testing.T) {
	tests := []struct {
		desc    string
		timeout time.Duration // Config.Timeout
		ctx     time.Duration // context deadline
	}{
		{"context deadline first", 5 * time.Second, 100 * time.Millisecond},
		{"config timeout first", 100 * time.Millisecond, 5 * time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			r, _, _ := setup(t, zone, Config{Timeout: tc.timeout})
			ctx, cancel := context.WithTimeout(t.Context(), tc.ctx)
			defer cancel()
			start := time.Now()
			_, err := r.LookupTXT(ctx, "slow.example.com")
			elapsed := time.Since(start)
			if kind(err) != timeoutErr {
				t.Errorf("err = %v, want a timeout", err)
			}
			if limit := min(tc.timeout, tc.ctx) + 200*time.Millisecond; elapsed > limit {
				t.Errorf("took %v, want at most %v", elapsed, limit)
			}
		})
	}
}

func TestCancel(t *testing.T) {
	r, srv, _ := setup(t, zone, Config{Timeout: time.Second})

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := r.LookupTXT(ctx, "split.example.com"); kind(err) != timeoutErr || !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled before: err = %v, want a timeout wrapping context.Canceled", err)
	}
	if n := srv.Queries("split.example.com", dns.TypeTXT); n != 0 {
		t.Errorf("cancelled before: %d queries sent, want 0", n)
	}

	ctx, cancel = context.WithCancel(t.Context())
	time.AfterFunc(50*time.Millisecond, cancel)
	start := time.Now()
	if _, err := r.LookupTXT(ctx, "slow.example.com"); kind(err) != timeoutErr || !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled during: err = %v, want a timeout wrapping context.Canceled", err)
	}
	if elapsed := time.Since(start); elapsed > 500*time.Millisecond {
		t.Errorf("cancelled during: took %v", elapsed)
	}
}

func TestCacheTTL(t *testing.T) {
	r, srv, clk := setup(t, zone, Config{Timeout: time.Second})
	steps := []struct {
		advance time.Duration
		queries int // the server has seen after the lookup
	}{
		{0, 1},
		{999 * time.Millisecond, 1},
		{time.Millisecond, 2}, // the 1s TTL is over
		{0, 2},
	}
	for i, s := range steps {
		clk.advance(s.advance)
		got, err := r.LookupTXT(t.Context(), "short.example.com")
		if err != nil || len(got) != 1 || got[0] != "short-lived" {
			t.Fatalf("step %d: got %q, %v", i, got, err)
		}
		if n := srv.Queries("short.example.com", dns.TypeTXT); n != s.queries {
			t.Errorf("step %d: server saw %d queries, want %d", i, n, s.queries)
		}
	}
	if hits, misses := r.Stats(); hits != 2 || misses != 2 {
		t.Errorf("Stats = %d hits, %d misses; want 2, 2", hits, misses)
	}
}

// TestCacheTTLFromChain checks that an answer reached through a CNAME is
// cached for the lowest TTL of the chain.
func TestCacheTTLFromChain(t *testing.T) {
	r, srv, clk := setup(t, "a.test. 5 CNAME b.test.\nb.test. 300 A 192.0.2.1", Config{})
	for range 2 {
		if _, err := r.LookupIPAddr(t.Context(), "a.test"); err != nil {
			t.Fatal(err)
		}
		clk.advance(5 * time.Second)
	}
	if n := srv.Queries("a.test", dns.TypeA); n != 2 {
		t.Errorf("server saw %d queries, want 2", n)
	}
}

func TestNegativeCache(t *testing.T) {
	tests := []struct {
		desc string
		name string
		ttl  time.Duration // 0: not cached
	}{
		// min(SOA TTL 300, MINIMUM 120), RFC 2308 5.
		{"NXDOMAIN", "nx.example.com", 120 * time.Second},
		{"NODATA", "dual.example.com", 120 * time.Second},
		{"NXDOMAIN without SOA", "nx.example.net", noSOATTL},
		{"NODATA without SOA", "nosoa.example.net", noSOATTL},
		{"SERVFAIL", "broken.example.com", 0},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			r, srv, clk := setup(t, zone, Config{Timeout: time.Second})
			queries := func() int { return srv.Queries(tc.name, dns.TypeTXT) }
			lookup := func() {
				t.Helper()
				if _, err := r.LookupTXT(t.Context(), tc.name); err == nil {
					t.Fatal("lookup succeeded")
				}
			}
			lookup()
			if tc.ttl == 0 {
				lookup()
				if n := queries(); n != 2 {
					t.Errorf("server saw %d queries, want 2 (not cached)", n)
				}
				return
			}
			clk.advance(tc.ttl - time.Second)
			lookup()
			if n := queries(); n != 1 {
				t.Errorf("before the TTL: server saw %d queries, want 1", n)
			}
			clk.advance(time.Second)
			lookup()
			if n := queries(); n != 2 {
				t.Errorf("after the TTL: server saw %d queries, want 2", n)
			}
		})
	}
}

func TestNegativeTTLCap(t *testing.T) {
	r, srv, clk := setup(t, "test. 86400 SOA ns.test. h.test. 1 2 3 4 86400", Config{})
	for range 2 {
		r.LookupTXT(t.Context(), "nx.test")
		clk.advance(maxNegativeTTL)
	}
	if n := srv.Queries("nx.test", dns.TypeTXT); n != 2 {
		t.Errorf("server saw %d queries, want 2", n)
	}
}

func TestLRU(t *testing.T) {
	r, srv, _ := setup(t, zone, Config{CacheSize: 2})
	// a, b and c fill a cache of 2, evicting a; then c and b hit, and a
	// is queried again.
	names := []string{"dual", "v4only", "half", "half", "v4only", "dual"}
	for _, n := range names {
		if _, err := r.lookup(t.Context(), n+".example.com", dns.TypeA); err != nil {
			t.Fatal(err)
		}
	}
	want := map[string]int{"dual": 2, "v4only": 1, "half": 1}
	for n, w := range want {
		if got := srv.Queries(n+".example.com", dns.TypeA); got != w {
			t.Errorf("%s: server saw %d queries, want %d", n, got, w)
		}
	}
	if hits, misses := r.Stats(); hits != 2 || misses != 4 {
		t.Errorf("Stats = %d hits, %d misses; want 2, 4", hits, misses)
	}
}

// TestCoalesce checks that concurrent lookups of one name share a query.
// The name is dropped so that the query stays in flight while all the
// lookups start.
func TestCoalesce(t *testing.T) {
	r, srv, _ := setup(t, zone, Config{Timeout: 300 * time.Millisecond})
	const n = 20
	errs := make(chan error, n)
	for range n {
		go func() {
			_, err := r.LookupTXT(t.Context(), "Slow.example.com")
			errs <- err
		}()
	}
	for range n {
		if err := <-errs; kind(err) != timeoutErr {
			t.Errorf("err = %v, want a timeout", err)
		}
	}
	if q := srv.Queries("slow.example.com", dns.TypeTXT); q != 1 {
		t.Errorf("server saw %d queries, want 1", q)
	}
}

func TestFlights(t *testing.T) {
	var f flights
	f.m = map[key]*flight{}
	k := key{"example.com.", dns.TypeA}
	release := make(chan struct{})
	calls := 0
	fn := func() answer {
		calls++
		<-release
		return answer{ttl: time.Second}
	}
	first, second := f.start(k, fn), f.start(k, fn)
	close(release)
	<-first.done
	if first != second || calls != 1 || first.ans.ttl != time.Second {
		t.Errorf("two starts gave different flights (%v) or %d calls", first != second, calls)
	}
	if third := f.start(k, fn); third == first {
		t.Error("a flight that ended was reused")
	} else {
		<-third.done
	}
}

// TestFailover checks that a server that refuses the connection is
// skipped for the next one.
func TestFailover(t *testing.T) {
	r, _, _ := setup(t, zone, Config{Timeout: time.Second})
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := pc.LocalAddr().String()
	pc.Close()
	r.servers = append([]string{closed}, r.servers...)
	if got, err := r.LookupTXT(t.Context(), "split.example.com"); err != nil || len(got) != 2 {
		t.Errorf("got %q, %v", got, err)
	}
}

func TestNew(t *testing.T) {
	tests := []struct {
		server string
		want   string
	}{
		{"127.0.0.1:5353", "127.0.0.1:5353"},
		{"127.0.0.1", "127.0.0.1:53"},
		{"::1", "[::1]:53"},
		{"[::1]", "[::1]:53"},
		{"[::1]:5353", "[::1]:5353"},
		{"dns.example", "dns.example:53"},
	}
	for _, tc := range tests {
		r, err := New(Config{Server: tc.server})
		if err != nil {
			t.Fatal(err)
		}
		if len(r.servers) != 1 || r.servers[0] != tc.want {
			t.Errorf("Server %q: servers %q, want [%q]", tc.server, r.servers, tc.want)
		}
		if r.timeout != defaultTimeout || r.cache.size != defaultCacheSize {
			t.Errorf("Server %q: timeout %v, cache size %d; want the defaults", tc.server, r.timeout, r.cache.size)
		}
	}

	// Whatever /etc/resolv.conf says, there is a server to ask.
	if r, err := New(Config{}); err != nil || len(r.servers) == 0 {
		t.Errorf("New(Config{}) = %v, %v", r, err)
	}

	for _, cfg := range []Config{{Timeout: -time.Second}, {CacheSize: -1}} {
		if _, err := New(cfg); err == nil {
			t.Errorf("New(%+v): no error", cfg)
		}
	}
}

const spfZone = `
$ORIGIN spf.test.
$TTL 300
@      SOA  ns hostmaster 1 3600 600 86400 60
pass   TXT  "v=spf1 ip4:192.0.2.0/24" " a:mail.spf.test mx -all"
pass   MX   10 mx.spf.test.
mail   A    198.51.100.1
mx     A    203.0.113.5
soft   TXT  "v=spf1 ~all"
ptr    TXT  "v=spf1 ptr:spf.test -all"
temp   TXT  "v=spf1 include:broken.spf.test -all"
slow2  TXT  "v=spf1 include:slow.spf.test -all"
1.100.51.198.in-addr.arpa. PTR mail.spf.test.
;! servfail broken.spf.test
;! drop slow.spf.test
`

// TestSPF runs blitiri spf through the Resolver.
func TestSPF(t *testing.T) {
	r, _, _ := setup(t, spfZone, Config{Timeout: 200 * time.Millisecond})
	tests := []struct {
		ip     string
		domain string
		want   spf.Result
	}{
		{"192.0.2.10", "pass.spf.test", spf.Pass},     // ip4
		{"198.51.100.1", "pass.spf.test", spf.Pass},   // a
		{"203.0.113.5", "pass.spf.test", spf.Pass},    // mx
		{"10.0.0.1", "pass.spf.test", spf.Fail},       // -all
		{"10.0.0.1", "soft.spf.test", spf.SoftFail},   // ~all
		{"198.51.100.1", "ptr.spf.test", spf.Pass},    // ptr
		{"10.0.0.1", "ptr.spf.test", spf.Fail},        // ptr, no PTR record
		{"10.0.0.1", "temp.spf.test", spf.TempError},  // SERVFAIL
		{"10.0.0.1", "slow2.spf.test", spf.TempError}, // timeout
		{"10.0.0.1", "nx.spf.test", spf.None},         // NXDOMAIN
		{"10.0.0.1", "mail.spf.test", spf.None},       // NODATA
	}
	for _, tc := range tests {
		t.Run(tc.ip+"@"+tc.domain, func(t *testing.T) {
			got, err := spf.CheckHostWithSender(net.ParseIP(tc.ip), "helo.example", "user@"+tc.domain,
				spf.WithResolver(r), spf.WithContext(t.Context()))
			if got != tc.want {
				t.Errorf("got %s (%v), want %s", got, err, tc.want)
			}
		})
	}
}

func BenchmarkCachedLookup(b *testing.B) {
	r, _, _ := setup(b, zone, Config{})
	ctx := b.Context()
	if _, err := r.LookupTXT(ctx, "split.example.com"); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := r.LookupTXT(ctx, "split.example.com"); err != nil {
			b.Fatal(err)
		}
	}
}
