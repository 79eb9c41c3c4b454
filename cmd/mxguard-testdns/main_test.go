package main

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func TestUsage(t *testing.T) {
	for _, args := range [][]string{{}, {"-zone"}, {"-zone", "x", "extra"}} {
		var out, errs strings.Builder
		if code := run(args, &out, &errs); code != 2 {
			t.Errorf("run(%q) = %d; want 2 (stderr %q)", args, code, errs.String())
		}
	}
	var out, errs strings.Builder
	if code := run([]string{"-zone", filepath.Join(t.TempDir(), "missing")}, &out, &errs); code != 1 {
		t.Errorf("missing zone file: exit %d; want 1", code)
	}
}

// TestServe serves a zone, answers from it, and stops on SIGINT.
func TestServe(t *testing.T) {
	dir := t.TempDir()
	zone, addrFile := filepath.Join(dir, "z"), filepath.Join(dir, "addr")
	if err := os.WriteFile(zone, []byte("sender.test. 300 IN TXT \"v=spf1 -all\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var out, errs strings.Builder
	done := make(chan int, 1)
	go func() { done <- run([]string{"-zone", zone, "-addr-file", addrFile}, &out, &errs) }()

	var addr string
	for deadline := time.Now().Add(10 * time.Second); addr == ""; time.Sleep(10 * time.Millisecond) {
		if b, err := os.ReadFile(addrFile); err == nil {
			addr = strings.TrimSpace(string(b))
		} else if time.Now().After(deadline) {
			t.Fatalf("no address file within 10s (stderr %q)", errs.String())
		}
	}
	m := new(dns.Msg)
	m.SetQuestion("sender.test.", dns.TypeTXT)
	r, err := dns.Exchange(m, addr)
	if err != nil || len(r.Answer) != 1 || !strings.Contains(r.Answer[0].String(), "v=spf1 -all") {
		t.Fatalf("TXT sender.test. from %s: %v %v", addr, r, err)
	}

	// run has subscribed to SIGINT before it wrote the address file.
	syscall.Kill(os.Getpid(), syscall.SIGINT)
	select {
	case code := <-done:
		if code != 0 || strings.TrimSpace(out.String()) != addr {
			t.Errorf("exit %d, stdout %q; want 0 and %q", code, out.String(), addr)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("still running 10s after SIGINT")
	}
}
