package spamd

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/enginetest"
)

// The messages both engines' tests send.
var ham, gtube = enginetest.Ham, enginetest.GTUBE

func check(c *Client, ctx context.Context, msg, user string) Evidence {
	return c.Check(ctx, strings.NewReader(msg), int64(len(msg)), user)
}

// TestRealSpamd asks the private spamd of scripts/engines/spamd.sh.
func TestRealSpamd(t *testing.T) {
	c := &Client{Address: enginetest.Spamd(t)}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	for _, user := range []string{"", "alice"} {
		ev := check(c, ctx, ham, user)
		if ev.Err != nil || ev.Skipped {
			t.Fatalf("ham, user %q: %+v", user, ev)
		}
		if ev.Spam || ev.Score >= ev.Required || ev.Required != 5 {
			t.Errorf("ham, user %q: spam %v, score %v/%v (%v); want ham below the required 5", user, ev.Spam, ev.Score, ev.Required, ev.Rules)
		}

		ev = check(c, ctx, gtube, user)
		if ev.Err != nil || ev.Skipped {
			t.Fatalf("GTUBE, user %q: %+v", user, ev)
		}
		if !ev.Spam || ev.Score < 1000 || !slices.Contains(ev.Rules, "GTUBE") {
			t.Errorf("GTUBE, user %q: spam %v, score %v/%v, rules %v; want spam, >= 1000, GTUBE", user, ev.Spam, ev.Score, ev.Required, ev.Rules)
		}
		t.Logf("GTUBE, user %q: %s %v", user, ev.Detail, ev.Rules)
	}
}

func TestParseAddress(t *testing.T) {
	tests := []struct {
		in, network, addr string
	}{
		{"inet:127.0.0.1:783", "tcp", "127.0.0.1:783"},
		{"inet:localhost:17830", "tcp", "localhost:17830"},
		{"inet:[::1]:783", "tcp", "[::1]:783"},
		{"unix:/run/spamd.sock", "unix", "/run/spamd.sock"},
		{"inet:127.0.0.1", "", ""},
		{"inet::783", "", ""},
		{"inet:127.0.0.1:0", "", ""},
		{"inet:127.0.0.1:65536", "", ""},
		{"inet:127.0.0.1:spamd", "", ""},
		{"inet:::1:783", "", ""},
		{"unix:", "", ""},
		{"tcp:127.0.0.1:783", "", ""},
		{"127.0.0.1:783", "", ""},
		{"", "", ""},
	}
	for _, tt := range tests {
		network, addr, err := ParseAddress(tt.in)
		if network != tt.network || addr != tt.addr || (err != nil) != (tt.network == "") {
			t.Errorf("ParseAddress(%q) = %q, %q, %v; want %q, %q", tt.in, network, addr, err, tt.network, tt.addr)
		}
	}
}

// request is what a fake spamd read.
type request struct {
	line    string
	headers map[string]string
	body    string
	err     error // reading it
}

// fakeSpamd listens on 127.0.0.1 (or, with a non-empty socket path, on a
// Unix socket) and hands every connection, once its request is read, to
// answer, with a channel closed when the test ends. It returns the address
// and a channel with the requests read. Connections and goroutines end
// with the test.
func fakeSpamd(t *testing.T, socket string, answer func(conn net.Conn, done <-chan struct{})) (string, <-chan request) {
	t.Helper()
	network, where := "tcp", "127.0.0.1:0"
	if socket != "" {
		network, where = "unix", socket
	}
	ln, err := net.Listen(network, where)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	done := make(chan struct{})
	reqs := make(chan request, 10)
	t.Cleanup(func() {
		close(done)
		ln.Close()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(2)
			go func() { // close the connection when the test ends
				defer wg.Done()
				<-done
				conn.Close()
			}()
			go func() {
				defer wg.Done()
				defer conn.Close()
				req := readRequest(bufio.NewReader(conn))
				reqs <- req
				if req.err == nil {
					answer(conn, done)
				}
			}()
		}
	}()
	if socket != "" {
		return "unix:" + socket, reqs
	}
	return "inet:" + ln.Addr().String(), reqs
}

func readRequest(br *bufio.Reader) request {
	req := request{headers: map[string]string{}}
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			req.err = err
			return req
		}
		if !strings.HasSuffix(line, "\r\n") {
			req.err = fmt.Errorf("line %q does not end in CRLF", line)
			return req
		}
		line = strings.TrimSuffix(line, "\r\n")
		if req.line == "" {
			req.line = line
			continue
		}
		if line == "" {
			break
		}
		name, value, _ := strings.Cut(line, ": ")
		req.headers[name] = value
	}
	n, err := strconv.Atoi(req.headers["Content-length"])
	if err != nil {
		req.err = fmt.Errorf("Content-length: %v", err)
		return req
	}
	body := make([]byte, n)
	_, req.err = io.ReadFull(br, body)
	req.body = string(body)
	return req
}

// say writes s and ends the answer.
func say(s string) func(net.Conn, <-chan struct{}) {
	return func(conn net.Conn, _ <-chan struct{}) { io.WriteString(conn, s) }
}

// hang reads the request and never answers.
func hang(_ net.Conn, done <-chan struct{}) { <-done }

// noLeaks fails the test if it ends with more goroutines than it began
// with. Call it first: cleanups run last-registered first, so it checks
// after the fake servers are gone.
func noLeaks(t *testing.T) {
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		for deadline := time.Now().Add(3 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			now := runtime.NumGoroutine()
			if now <= before {
				return
			}
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				t.Fatalf("%d goroutines, %d before:\n%s", now, before, buf[:runtime.Stack(buf, true)])
			}
		}
	})
}

func TestFakeSpamd(t *testing.T) {
	const ok = "SPAMD/1.5 0 EX_OK\r\nContent-length: 13\r\nSpam: False ; 1.5 / 5.0\r\n\r\nFOO,BAR_BAZ\r\n"
	tests := []struct {
		name    string
		answer  func(net.Conn, <-chan struct{})
		want    Evidence // Err: only whether there is one
		errIs   error
		errText string
	}{
		{name: "ham", answer: say(ok),
			want: Evidence{Score: 1.5, Required: 5, Rules: []string{"FOO", "BAR_BAZ"}, Detail: "ham, score 1.5/5.0"}},
		{name: "spam, no Content-length", answer: say("SPAMD/1.1 0 EX_OK\r\nSpam: Yes; 1000.2/6.5\r\n\r\nGTUBE"),
			want: Evidence{Spam: true, Score: 1000.2, Required: 6.5, Rules: []string{"GTUBE"}, Detail: "spam, score 1000.2/6.5"}},
		{name: "no rules", answer: say("SPAMD/1.5 0 EX_OK\r\nContent-length: 0\r\nSpam: False ; -0.1 / 5.0\r\n\r\n"),
			want: Evidence{Score: -0.1, Required: 5, Detail: "ham, score -0.1/5.0"}},
		{name: "EX code", answer: say("SPAMD/1.0 76 Bad header line: User: x\r\n"),
			want: Evidence{Err: errors.New("")}, errText: "76 Bad header line"},
		{name: "not spamd", answer: say("HTTP/1.1 400 Bad Request\r\n\r\n"),
			want: Evidence{Err: errors.New("")}, errIs: ErrGarbage},
		{name: "no Spam header", answer: say("SPAMD/1.5 0 EX_OK\r\nContent-length: 5\r\n\r\nGTUBE"),
			want: Evidence{Err: errors.New("")}, errIs: ErrGarbage},
		{name: "bad Spam header", answer: say("SPAMD/1.5 0 EX_OK\r\nSpam: Maybe ; 1 / 5\r\n\r\n"),
			want: Evidence{Err: errors.New("")}, errIs: ErrGarbage},
		{name: "bad score", answer: say("SPAMD/1.5 0 EX_OK\r\nSpam: True ; lots / 5\r\n\r\n"),
			want: Evidence{Err: errors.New("")}, errIs: ErrGarbage},
		{name: "body shorter than Content-length", answer: say("SPAMD/1.5 0 EX_OK\r\nContent-length: 100\r\nSpam: True ; 9 / 5\r\n\r\nFOO"),
			want: Evidence{Err: errors.New("")}, errIs: ErrGarbage},
		{name: "closes without a word", answer: say(""),
			want: Evidence{Err: errors.New("")}, errIs: ErrGarbage},
		{name: "closes mid-headers", answer: say("SPAMD/1.5 0 EX_OK\r\nSpam: True ; 9 / 5\r\n"),
			want: Evidence{Err: errors.New("")}, errIs: ErrGarbage},
		{name: "hangs", answer: hang,
			want: Evidence{Err: errors.New("")}, errIs: context.DeadlineExceeded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			noLeaks(t)
			addr, reqs := fakeSpamd(t, "", tt.answer)
			c := &Client{Address: addr}
			ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
			defer cancel()
			start := time.Now()
			ev := check(c, ctx, ham, "alice@example.org")
			if took := time.Since(start); took > 2*time.Second {
				t.Errorf("Check took %v with a 500ms deadline", took)
			}
			switch {
			case (ev.Err != nil) != (tt.want.Err != nil):
				t.Fatalf("Err = %v, want an error: %v", ev.Err, tt.want.Err != nil)
			case tt.errIs != nil && !errors.Is(ev.Err, tt.errIs):
				t.Errorf("Err = %v, want one that is %v", ev.Err, tt.errIs)
			case tt.errIs != ErrGarbage && errors.Is(ev.Err, ErrGarbage):
				t.Errorf("Err = %v, want no garbage", ev.Err)
			case !strings.Contains(fmt.Sprint(ev.Err), tt.errText):
				t.Errorf("Err = %v, want it to say %q", ev.Err, tt.errText)
			}
			if ev.Err != nil {
				t.Logf("Err: %v", ev.Err)
			}
			if ev.Err == nil && !equal(ev, tt.want) {
				t.Errorf("got %+v\nwant %+v", ev, tt.want)
			}

			req := <-reqs
			want := request{line: "SYMBOLS SPAMC/1.5", body: ham, headers: map[string]string{
				"Content-length": strconv.Itoa(len(ham)), "User": "alice@example.org"}}
			if req.err != nil || req.line != want.line || req.body != want.body || !maps(req.headers, want.headers) {
				t.Errorf("spamd read %+v\nwant %+v", req, want)
			}
		})
	}
}

func equal(a, b Evidence) bool {
	return a.Skipped == b.Skipped && a.Score == b.Score && a.Required == b.Required &&
		a.Spam == b.Spam && slices.Equal(a.Rules, b.Rules) && a.Detail == b.Detail
}

func maps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// TestNoUser: without a user there is no User header.
func TestNoUser(t *testing.T) {
	noLeaks(t)
	addr, reqs := fakeSpamd(t, "", say("SPAMD/1.5 0 EX_OK\r\nSpam: False ; 0 / 5\r\n\r\n"))
	ev := check(&Client{Address: addr}, context.Background(), "Subject: x\r\n\r\nhi\r\n", "")
	if ev.Err != nil {
		t.Fatal(ev.Err)
	}
	if req := <-reqs; len(req.headers) != 1 || req.headers["Content-length"] != "18" {
		t.Errorf("headers %v, want only Content-length: 18", req.headers)
	}
}

func TestUnixSocket(t *testing.T) {
	noLeaks(t)
	addr, _ := fakeSpamd(t, filepath.Join(t.TempDir(), "spamd.sock"), say("SPAMD/1.5 0 EX_OK\r\nSpam: True ; 7 / 5\r\n\r\nX"))
	ev := check(&Client{Address: addr}, context.Background(), ham, "")
	if ev.Err != nil || !ev.Spam || ev.Score != 7 {
		t.Errorf("%+v, want spam with score 7", ev)
	}
}

// TestCancel: a cancelled check ends at once, even without a deadline.
func TestCancel(t *testing.T) {
	noLeaks(t)
	addr, reqs := fakeSpamd(t, "", hang)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-reqs
		cancel()
	}()
	ev := check(&Client{Address: addr}, ctx, ham, "")
	if !errors.Is(ev.Err, context.Canceled) {
		t.Errorf("Err = %v, want context.Canceled", ev.Err)
	}
}

func TestRefused(t *testing.T) {
	noLeaks(t)
	addr := "inet:" + enginetest.ClosedPort(t)
	ev := check(&Client{Address: addr}, context.Background(), ham, "")
	if ev.Err == nil || errors.Is(ev.Err, ErrGarbage) || !strings.Contains(ev.Err.Error(), "refused") {
		t.Errorf("Err = %v, want connection refused", ev.Err)
	}
}

// TestMaxSize: a message over the limit is not sent at all; one at the
// limit is.
func TestMaxSize(t *testing.T) {
	noLeaks(t)
	addr, reqs := fakeSpamd(t, "", say("SPAMD/1.5 0 EX_OK\r\nSpam: False ; 0 / 5\r\n\r\n"))
	c := &Client{Address: addr, MaxSize: int64(len(ham)) - 1}
	if ev := check(c, context.Background(), ham, ""); !ev.Skipped || ev.Detail != "too large" || ev.Err != nil {
		t.Errorf("over MaxSize: %+v, want Skipped, too large", ev)
	}
	c.MaxSize++
	if ev := check(c, context.Background(), ham, ""); ev.Skipped || ev.Err != nil {
		t.Errorf("at MaxSize: %+v, want scanned", ev)
	}
	if n := len(reqs); n != 1 {
		t.Errorf("spamd got %d requests, want 1", n)
	}
}

// TestBadInput: a message shorter than announced, or a user that would
// add a header, fail before spamd answers.
func TestBadInput(t *testing.T) {
	noLeaks(t)
	addr, _ := fakeSpamd(t, "", say("SPAMD/1.5 0 EX_OK\r\nSpam: False ; 0 / 5\r\n\r\n"))
	c := &Client{Address: addr}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if ev := c.Check(ctx, strings.NewReader(ham), int64(len(ham))+10, ""); ev.Err == nil || !strings.Contains(ev.Err.Error(), "announced") {
		t.Errorf("short message: Err = %v", ev.Err)
	}
	if ev := check(c, ctx, ham, "alice\r\nX-Evil: 1"); ev.Err == nil {
		t.Errorf("user with CRLF: no error")
	}
	if ev := check(&Client{Address: "tcp:127.0.0.1:1"}, ctx, ham, ""); ev.Err == nil {
		t.Errorf("bad address: no error")
	}
}

func FuzzParseReply(f *testing.F) {
	f.Add("SPAMD/1.5 0 EX_OK\r\nContent-length: 13\r\nSpam: False ; 1.5 / 5.0\r\n\r\nFOO,BAR_BAZ\r\n")
	f.Add("SPAMD/1.1 0 EX_OK\r\nSpam: Yes; 1000.2/6.5\r\n\r\nGTUBE")
	f.Add("SPAMD/1.0 76 Bad header line: User: x\r\n")
	f.Add("SPAMD/1.5 0 EX_OK\r\nContent-length: 100\r\nSpam: True ; 9 / 5\r\n\r\nFOO")
	f.Fuzz(func(t *testing.T, s string) {
		ev, err := parseReply(bufio.NewReader(strings.NewReader(s)))
		if err == nil && ev.Detail == "" {
			t.Errorf("%q: no error and no detail", s)
		}
	})
}
