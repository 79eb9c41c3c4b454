package testdns

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// bigTXT is a TXT record whose answer does not fit in 1232 bytes.
var bigTXT = strings.Repeat(`"`+strings.Repeat("x", 250)+`" `, 6)

var zone = `
$ORIGIN example.com.
$TTL 300
@       SOA   ns hostmaster 1 3600 600 86400 60
@       MX    10 mx
@       TXT   "v=spf1 " "-all"
mx      A     192.0.2.25
mx      AAAA  2001:db8::25
www     CNAME mx
loop1   CNAME loop2
loop2   CNAME loop1
a.b     A     192.0.2.1
big     TXT   ` + bigTXT + `
;! servfail broken.example.com
;! drop slow.example.com.

$ORIGIN example.net.
nosoa   A     192.0.2.2
`

func startTest(t *testing.T) *Server {
	t.Helper()
	s, err := Start(zone)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// query asks s over network ("udp" or "tcp"), with EDNS0 if edns.
func query(s *Server, network, name string, qtype uint16, edns bool) (*dns.Msg, error) {
	c := &dns.Client{Net: network, Timeout: 200 * time.Millisecond}
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	if edns {
		m.SetEdns0(1232, false)
	}
	in, _, err := c.Exchange(m, s.Addr())
	return in, err
}

// rrs renders records one per string, fields separated by one space.
func rrs(rrs []dns.RR) []string {
	var out []string
	for _, rr := range rrs {
		out = append(out, strings.Join(strings.Fields(rr.String()), " "))
	}
	return out
}

func TestAnswers(t *testing.T) {
	s := startTest(t)
	const soa = "example.com. 60 IN SOA ns.example.com. hostmaster.example.com. 1 3600 600 86400 60"
	tests := []struct {
		name    string
		qtype   uint16
		network string
		rcode   int
		answer  []string
		ns      []string
	}{
		{"mx.example.com.", dns.TypeA, "udp", dns.RcodeSuccess,
			[]string{"mx.example.com. 300 IN A 192.0.2.25"}, nil},
		{"MX.Example.COM.", dns.TypeAAAA, "udp", dns.RcodeSuccess,
			[]string{"mx.example.com. 300 IN AAAA 2001:db8::25"}, nil},
		{"example.com.", dns.TypeTXT, "udp", dns.RcodeSuccess,
			[]string{`example.com. 300 IN TXT "v=spf1 " "-all"`}, nil},
		{"example.com.", dns.TypeMX, "udp", dns.RcodeSuccess,
			[]string{"example.com. 300 IN MX 10 mx.example.com."}, nil},
		{"www.example.com.", dns.TypeA, "udp", dns.RcodeSuccess,
			[]string{"www.example.com. 300 IN CNAME mx.example.com.", "mx.example.com. 300 IN A 192.0.2.25"}, nil},
		{"www.example.com.", dns.TypeCNAME, "udp", dns.RcodeSuccess,
			[]string{"www.example.com. 300 IN CNAME mx.example.com."}, nil},
		{"www.example.com.", dns.TypeTXT, "udp", dns.RcodeSuccess,
			[]string{"www.example.com. 300 IN CNAME mx.example.com."}, []string{soa}},
		{"loop1.example.com.", dns.TypeA, "udp", dns.RcodeSuccess,
			[]string{
				"loop1.example.com. 300 IN CNAME loop2.example.com.", "loop2.example.com. 300 IN CNAME loop1.example.com.",
				"loop1.example.com. 300 IN CNAME loop2.example.com.", "loop2.example.com. 300 IN CNAME loop1.example.com.",
				"loop1.example.com. 300 IN CNAME loop2.example.com.", "loop2.example.com. 300 IN CNAME loop1.example.com.",
				"loop1.example.com. 300 IN CNAME loop2.example.com.", "loop2.example.com. 300 IN CNAME loop1.example.com.",
			}, []string{soa}},
		{"nx.example.com.", dns.TypeA, "udp", dns.RcodeNameError, nil, []string{soa}},
		{"mx.example.com.", dns.TypeTXT, "udp", dns.RcodeSuccess, nil, []string{soa}},
		{"b.example.com.", dns.TypeA, "udp", dns.RcodeSuccess, nil, []string{soa}},
		{"nx.example.net.", dns.TypeA, "udp", dns.RcodeNameError, nil, nil},
		{"nosoa.example.net.", dns.TypeTXT, "udp", dns.RcodeSuccess, nil, nil},
		{"broken.example.com.", dns.TypeA, "udp", dns.RcodeServerFailure, nil, nil},
		{"mx.example.com.", dns.TypeA, "tcp", dns.RcodeSuccess,
			[]string{"mx.example.com. 300 IN A 192.0.2.25"}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.network+"/"+tc.name+"/"+dns.TypeToString[tc.qtype], func(t *testing.T) {
			in, err := query(s, tc.network, tc.name, tc.qtype, true)
			if err != nil {
				t.Fatal(err)
			}
			if in.Rcode != tc.rcode {
				t.Errorf("rcode = %s, want %s", dns.RcodeToString[in.Rcode], dns.RcodeToString[tc.rcode])
			}
			if got := rrs(in.Answer); !slices.Equal(got, tc.answer) {
				t.Errorf("answer = %q, want %q", got, tc.answer)
			}
			if got := rrs(in.Ns); !slices.Equal(got, tc.ns) {
				t.Errorf("authority = %q, want %q", got, tc.ns)
			}
			if tc.rcode != dns.RcodeServerFailure && !in.Authoritative {
				t.Error("AA not set")
			}
			if in.IsEdns0() == nil {
				t.Error("no OPT in the answer to an EDNS0 query")
			}
		})
	}
}

func TestTruncation(t *testing.T) {
	s := startTest(t)
	tests := []struct {
		network string
		edns    bool
		name    string
		wantTC  bool
	}{
		{"udp", true, "big.example.com.", true},
		{"udp", false, "big.example.com.", true},
		{"tcp", true, "big.example.com.", false},
		{"tcp", false, "big.example.com.", false},
		{"udp", false, "example.com.", false},
	}
	for _, tc := range tests {
		in, err := query(s, tc.network, tc.name, dns.TypeTXT, tc.edns)
		if err != nil {
			t.Fatalf("%s edns=%v: %v", tc.network, tc.edns, err)
		}
		if in.Truncated != tc.wantTC {
			t.Errorf("%s edns=%v %s: TC = %v, want %v", tc.network, tc.edns, tc.name, in.Truncated, tc.wantTC)
		}
		if !tc.wantTC && len(in.Answer) != 1 {
			t.Errorf("%s edns=%v %s: %d answers, want 1", tc.network, tc.edns, tc.name, len(in.Answer))
		}
	}
}

func isTimeout(err error) bool {
	var nerr net.Error
	return errors.As(err, &nerr) && nerr.Timeout()
}

func TestDropDirective(t *testing.T) {
	s := startTest(t)
	for _, network := range []string{"udp", "tcp"} {
		if _, err := query(s, network, "slow.example.com.", dns.TypeA, true); !isTimeout(err) {
			t.Errorf("%s: err = %v, want a timeout", network, err)
		}
	}
	if n := s.Queries("SLOW.example.com", dns.TypeA); n != 2 {
		t.Errorf("Queries = %d, want 2", n)
	}
}

func TestFailureAPI(t *testing.T) {
	s := startTest(t)
	const name = "mx.example.com."
	rcode := func() int {
		t.Helper()
		in, err := query(s, "udp", name, dns.TypeA, false)
		if err != nil {
			t.Fatal(err)
		}
		return in.Rcode
	}

	s.SetServFail(name)
	if got := rcode(); got != dns.RcodeServerFailure {
		t.Errorf("after SetServFail: rcode %s", dns.RcodeToString[got])
	}
	s.Clear(name)
	if got := rcode(); got != dns.RcodeSuccess {
		t.Errorf("after Clear: rcode %s", dns.RcodeToString[got])
	}
	s.SetDrop("MX.example.com")
	if _, err := query(s, "udp", name, dns.TypeA, false); !isTimeout(err) {
		t.Errorf("after SetDrop: err = %v, want a timeout", err)
	}
	s.Clear(name)
	if got := rcode(); got != dns.RcodeSuccess {
		t.Errorf("after second Clear: rcode %s", dns.RcodeToString[got])
	}
	if n := s.Queries(name, dns.TypeA); n != 4 {
		t.Errorf("Queries = %d, want 4", n)
	}
}

func TestSet(t *testing.T) {
	s := startTest(t)
	if err := s.Set("new.example.org. 60 A 192.0.2.9\n;! servfail other.example.org"); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		rcode int
	}{
		{"new.example.org.", dns.RcodeSuccess},
		{"mx.example.com.", dns.RcodeNameError},
		{"broken.example.com.", dns.RcodeNameError},
		{"other.example.org.", dns.RcodeServerFailure},
	}
	for _, tc := range tests {
		in, err := query(s, "udp", tc.name, dns.TypeA, false)
		if err != nil {
			t.Fatal(err)
		}
		if in.Rcode != tc.rcode {
			t.Errorf("%s: rcode %s, want %s", tc.name, dns.RcodeToString[in.Rcode], dns.RcodeToString[tc.rcode])
		}
	}
}

func TestStartFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "zone")
	if err := os.WriteFile(path, []byte("host.example. A 192.0.2.7\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := StartFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	in, err := query(s, "tcp", "host.example.", dns.TypeA, false)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"host.example. 3600 IN A 192.0.2.7"}
	if got := rrs(in.Answer); !slices.Equal(got, want) {
		t.Errorf("answer = %q, want %q", got, want)
	}

	if _, err := StartFile(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("StartFile of a missing file: no error")
	}
}

// TestStartOn serves on an address of our choosing: another loopback
// address than 127.0.0.1, port 0 for a free one.
func TestStartOn(t *testing.T) {
	s, err := StartOn("host.example. A 192.0.2.7\n", "127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if host, port, _ := net.SplitHostPort(s.Addr()); host != "127.0.0.2" || port == "0" {
		t.Errorf("Addr() = %q; want 127.0.0.2 and the port the kernel chose", s.Addr())
	}
	for _, network := range []string{"udp", "tcp"} {
		in, err := query(s, network, "host.example.", dns.TypeA, false)
		if err != nil {
			t.Fatalf("%s: %v", network, err)
		}
		if len(in.Answer) != 1 {
			t.Errorf("%s: answer %q; want the A record", network, rrs(in.Answer))
		}
	}

	for _, addr := range []string{"127.0.0.2", "not-an-address:53"} {
		if s, err := StartOn("", addr); err == nil {
			s.Close()
			t.Errorf("StartOn(%q): no error", addr)
		}
	}
}

func TestBadZone(t *testing.T) {
	for _, text := range []string{
		"example.com. A not-an-ip",
		";! servfail",
		";! explode example.com",
	} {
		if s, err := Start(text); err == nil {
			s.Close()
			t.Errorf("Start(%q): no error", text)
		}
	}
}
