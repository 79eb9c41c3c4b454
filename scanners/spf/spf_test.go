package spf

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/mxguard/mxguard/scanners/resolver"
)

// TestCheck evaluates every SPF result through a map-based resolver: no network.
func TestCheck(t *testing.T) {
	fake := &resolver.Fake{
		TXT: map[string][]string{
			"pass.test":      {"v=spf1 ip4:192.0.2.0/24 -all"},
			"fail.test":      {"v=spf1 ip4:198.51.100.1 -all"},
			"soft.test":      {"v=spf1 ~all"},
			"neutral.test":   {"v=spf1 ?all"},
			"perm.test":      {"v=spf1 ip4:not-an-ip -all"},
			"twice.test":     {"v=spf1 -all", "v=spf1 +all"},
			"mx.test":        {"v=spf1 mx -all"},
			"include.test":   {"v=spf1 include:broken.test -all"},
			"helo.example":   {"v=spf1 ip6:2001:db8::/32 -all"},
			"unrelated.test": {"google-site-verification=abc"},
		},
		MX: map[string][]*net.MX{"mx.test": {{Host: "mail.mx.test", Pref: 10}}},
		IP: map[string][]net.IP{"mail.mx.test": {net.ParseIP("192.0.2.25")}},
		Errors: map[string]error{
			"temp.test":   resolver.ServFail("temp.test"),
			"broken.test": resolver.Timeout("broken.test"),
		},
	}
	c := &Checker{Resolver: fake}
	tests := []struct {
		ip, helo, sender string
		want             Result
		domain           string
	}{
		{"192.0.2.7", "h.test", "a@pass.test", Pass, "pass.test"},
		{"192.0.2.7", "h.test", "a@fail.test", Fail, "fail.test"},
		{"192.0.2.7", "h.test", "a@soft.test", SoftFail, "soft.test"},
		{"192.0.2.7", "h.test", "a@neutral.test", Neutral, "neutral.test"},
		{"192.0.2.7", "h.test", "a@nothing.test", None, "nothing.test"},
		{"192.0.2.7", "h.test", "a@unrelated.test", None, "unrelated.test"},
		{"192.0.2.7", "h.test", "a@temp.test", TempError, "temp.test"},
		{"192.0.2.7", "h.test", "a@perm.test", PermError, "perm.test"},
		{"192.0.2.7", "h.test", "a@twice.test", PermError, "twice.test"},
		{"192.0.2.25", "h.test", "a@mx.test", Pass, "mx.test"},
		{"192.0.2.26", "h.test", "a@mx.test", Fail, "mx.test"},
		{"192.0.2.7", "h.test", "a@include.test", TempError, "include.test"},
		{"2001:db8::5", "helo.example", "", Pass, "helo.example"}, // null sender: the HELO identity
		{"::ffff:192.0.2.7", "h.test", "a@PASS.test", Pass, "pass.test"},
	}
	for _, tt := range tests {
		ev := c.Check(context.Background(), netip.MustParseAddr(tt.ip), tt.helo, tt.sender)
		if ev.Result != tt.want || ev.Domain != tt.domain {
			t.Errorf("%s from %s <%s>: %s for %q (%v); want %s for %q", tt.ip, tt.helo, tt.sender, ev.Result, ev.Domain, ev.Err, tt.want, tt.domain)
		}
	}
}

func TestCheckWithoutIdentity(t *testing.T) {
	c := &Checker{Resolver: &resolver.Fake{}}
	if ev := c.Check(context.Background(), netip.Addr{}, "h.test", "a@b.test"); ev.Result != None || ev.Err == nil {
		t.Errorf("no client address: %+v", ev)
	}
	if ev := c.Check(context.Background(), netip.MustParseAddr("192.0.2.1"), "", ""); ev.Result != None || ev.Err == nil {
		t.Errorf("no domain: %+v", ev)
	}
}

// TestCheckDeadline: a slow DNS never holds the check past its context.
func TestCheckDeadline(t *testing.T) {
	c := &Checker{Resolver: &resolver.Fake{TXT: map[string][]string{"slow.test": {"v=spf1 -all"}}, Delay: time.Minute}}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	ev := c.Check(ctx, netip.MustParseAddr("192.0.2.1"), "h.test", "a@slow.test")
	if ev.Result != TempError || time.Since(start) > 5*time.Second {
		t.Errorf("got %s after %v; want temperror at the deadline", ev.Result, time.Since(start))
	}
}
