package resolver

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"
)

func TestFake(t *testing.T) {
	f := &Fake{
		TXT:  map[string][]string{"Example.com": {"v=spf1 -all"}, "empty.example.com": {}},
		MX:   map[string][]*net.MX{"example.com.": {{Host: "mx.example.com.", Pref: 10}}},
		IP:   map[string][]net.IP{"mx.example.com": {net.ParseIP("192.0.2.1"), net.ParseIP("2001:db8::1")}},
		Addr: map[string][]string{"192.0.2.1": {"mx.example.com."}},
		Errors: map[string]error{
			"broken.example.com": ServFail("broken.example.com"),
			"slow.example.com":   Timeout("slow.example.com"),
			"gone.example.com":   NotFound("gone.example.com"),
		},
	}
	tests := []struct {
		desc   string
		lookup lookupFunc
		name   string
		want   []string
		err    errKind
	}{
		{"TXT", txt, "example.com", []string{"v=spf1 -all"}, noError},
		{"TXT case and dot", txt, "EXAMPLE.COM.", []string{"v=spf1 -all"}, noError},
		{"MX", mx, "Example.com", []string{"10 mx.example.com."}, noError},
		{"IP", ip, "mx.example.com.", []string{"192.0.2.1", "2001:db8::1"}, noError},
		{"PTR", ptr, "192.0.2.1", []string{"mx.example.com."}, noError},
		{"no entry", txt, "mx.example.com", nil, notFoundErr},
		{"empty entry", txt, "empty.example.com", nil, notFoundErr},
		{"ServFail", ip, "broken.example.com", nil, temporaryErr},
		{"Timeout", mx, "slow.example.com", nil, timeoutErr},
		{"NotFound", txt, "gone.example.com", nil, notFoundErr},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			got, err := tc.lookup(t.Context(), f, tc.name)
			if k := kind(err); k != tc.err {
				t.Fatalf("err = %v (%s), want %s", err, k, tc.err)
			}
			if strings.Join(got, "|") != strings.Join(tc.want, "|") {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestFakeContext(t *testing.T) {
	tests := []struct {
		desc  string
		delay time.Duration
		ctx   time.Duration // 0: cancelled before the lookup
		want  error         // what the error wraps
	}{
		{"cancelled", 0, 0, context.Canceled},
		{"cancelled, with delay", time.Hour, 0, context.Canceled},
		{"deadline during delay", time.Hour, 20 * time.Millisecond, context.DeadlineExceeded},
		{"delay within deadline", time.Millisecond, time.Hour, nil},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			f := &Fake{TXT: map[string][]string{"example.com": {"x"}}, Delay: tc.delay}
			ctx, cancel := context.WithCancel(t.Context())
			if tc.ctx == 0 {
				cancel()
			} else {
				defer cancel()
				ctx, cancel = context.WithTimeout(ctx, tc.ctx)
				defer cancel()
			}
			_, err := f.LookupTXT(ctx, "example.com")
			if !errors.Is(err, tc.want) || tc.want != nil && kind(err) != timeoutErr {
				t.Errorf("err = %v, want a timeout wrapping %v", err, tc.want)
			}
		})
	}
}
