package rspamd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/enginetest"
)

// The messages both engines' tests send.
var ham, gtube = enginetest.Ham, enginetest.GTUBE

var (
	// envelope is ham's, every field set.
	envelope = Envelope{
		IP:       "192.0.2.10",
		Helo:     "mail.example.com",
		Hostname: "mail.example.com",
		From:     "alice@example.com",
		User:     "alice",
		QueueID:  "4AbCdE",
		Rcpts:    []string{"bob@example.org", "carol@example.org"},
	}
)

func check(c *Client, ctx context.Context, msg string, env Envelope) Evidence {
	return c.Check(ctx, strings.NewReader(msg), int64(len(msg)), env)
}

// TestRealRspamd asks the private rspamd of scripts/engines/rspamd.sh.
func TestRealRspamd(t *testing.T) {
	c := &Client{URL: enginetest.Rspamd(t)}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	for _, env := range []Envelope{{}, envelope} {
		ev := check(c, ctx, ham, env)
		if ev.Err != nil || ev.Skipped {
			t.Fatalf("ham, %+v: %+v", env, ev)
		}
		if ev.Action != "no action" || ev.Score >= ev.Required || ev.Required <= 0 {
			t.Errorf("ham, %+v: %s; want no action, below required", env, ev.Detail)
		}
		if !slices.IsSorted(ev.Symbols) || len(ev.Symbols) == 0 {
			t.Errorf("ham: symbols %v, want some, sorted", ev.Symbols)
		}

		ev = check(c, ctx, gtube, env)
		if ev.Err != nil || ev.Skipped {
			t.Fatalf("GTUBE, %+v: %+v", env, ev)
		}
		if ev.Action != "reject" || !slices.Contains(ev.Symbols, "GTUBE") {
			t.Errorf("GTUBE, %+v: %s, symbols %v; want reject, GTUBE", env, ev.Detail, ev.Symbols)
		}
		t.Logf("GTUBE: %s %v", ev.Detail, ev.Symbols)
	}

	// rspamd compares the envelope with the headers: proof that it got it.
	for from, want := range map[string]string{
		"alice@example.com":   "FROM_EQ_ENVFROM",
		"bounces@example.net": "FROM_NEQ_ENVFROM",
	} {
		env := envelope
		env.From = from
		ev := check(c, ctx, ham, env)
		if ev.Err != nil || !slices.Contains(ev.Symbols, want) {
			t.Errorf("envelope sender %s: %v, symbols %v; want %s", from, ev.Err, ev.Symbols, want)
		}
	}
}

// noLeaks fails the test if it ends with more goroutines than it began
// with, idle HTTP connections aside. Call it first: cleanups run
// last-registered first, so it checks after the fake servers are gone.
func noLeaks(t *testing.T) {
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		for deadline := time.Now().Add(3 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			defaultHTTP.CloseIdleConnections()
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

// fakeRspamd serves handler on 127.0.0.1 until the test ends; a handler
// that waits on its request's context is released then too.
func fakeRspamd(t *testing.T, handler http.HandlerFunc) string {
	srv := httptest.NewServer(handler)
	t.Cleanup(srv.Close)
	if host, _, _ := net.SplitHostPort(srv.Listener.Addr().String()); host != "127.0.0.1" {
		t.Fatalf("fake rspamd listens on %s", srv.Listener.Addr())
	}
	return srv.URL
}

func answer(status int, body string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.WriteHeader(status)
		io.WriteString(w, body)
	}
}

func TestFakeRspamd(t *testing.T) {
	const ok = `{"is_skipped":false,"score":6.5,"required_score":15.0,"action":"add header",
		"symbols":{"ZZ":{"name":"ZZ","score":6.0},"AA":{"name":"AA","score":0.5,"options":["x"]}},
		"messages":{},"time_real":0.01}`
	tests := []struct {
		name    string
		handler http.HandlerFunc
		want    Evidence // Err: only whether there is one
		errIs   error
		errText string
	}{
		{name: "answer", handler: answer(200, ok),
			want: Evidence{Score: 6.5, Required: 15, Action: "add header", Symbols: []string{"AA", "ZZ"}, Detail: "add header, score 6.50/15.00"}},
		{name: "no symbols", handler: answer(200, `{"score":-1,"required_score":15,"action":"no action"}`),
			want: Evidence{Score: -1, Required: 15, Action: "no action", Detail: "no action, score -1.00/15.00"}},
		{name: "HTTP 500", handler: answer(500, `{"error":"cannot process"}`),
			want: Evidence{Err: errors.New("")}, errText: "500 Internal Server Error: {\"error\":\"cannot process\"}"},
		{name: "not JSON", handler: answer(200, "pong"),
			want: Evidence{Err: errors.New("")}, errIs: ErrGarbage},
		{name: "truncated JSON", handler: answer(200, ok[:40]),
			want: Evidence{Err: errors.New("")}, errIs: ErrGarbage},
		{name: "error object", handler: answer(200, `{"error":"something"}`),
			want: Evidence{Err: errors.New("")}, errIs: ErrGarbage},
		{name: "no action", handler: answer(200, `{"score":1,"required_score":15}`),
			want: Evidence{Err: errors.New("")}, errIs: ErrGarbage},
		{name: "answers before reading the message", handler: func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, ok)
		}, want: Evidence{Score: 6.5, Required: 15, Action: "add header", Symbols: []string{"AA", "ZZ"}, Detail: "add header, score 6.50/15.00"}},
		{name: "hangs", handler: func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			<-r.Context().Done() // the client gave up, or the server closes
		}, want: Evidence{Err: errors.New("")}, errIs: context.DeadlineExceeded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			noLeaks(t)
			url := fakeRspamd(t, tt.handler)
			ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
			defer cancel()
			start := time.Now()
			ev := check(&Client{URL: url}, ctx, ham, envelope)
			if took := time.Since(start); took > 2*time.Second {
				t.Errorf("Check took %v with a 500ms deadline", took)
			}
			if ev.Err != nil {
				t.Logf("Err: %v", ev.Err)
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
			if ev.Err == nil && !equal(ev, tt.want) {
				t.Errorf("got %+v\nwant %+v", ev, tt.want)
			}
		})
	}
}

func equal(a, b Evidence) bool {
	return a.Skipped == b.Skipped && a.Score == b.Score && a.Required == b.Required &&
		a.Action == b.Action && slices.Equal(a.Symbols, b.Symbols) && a.Detail == b.Detail
}

// TestRequest checks what rspamd is sent: the message as the body, each
// envelope field in its header, one Rcpt header per recipient.
func TestRequest(t *testing.T) {
	noLeaks(t)
	got := make(chan *http.Request, 1)
	bodies := make(chan string, 1)
	url := fakeRspamd(t, func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		got <- r
		bodies <- string(body)
		io.WriteString(w, `{"score":0,"required_score":15,"action":"no action"}`)
	})
	c := &Client{URL: url + "/", Password: "s3cret"}
	if ev := check(c, context.Background(), ham, envelope); ev.Err != nil {
		t.Fatal(ev.Err)
	}
	r, body := <-got, <-bodies
	if r.Method != "POST" || r.URL.Path != "/checkv2" || r.ContentLength != int64(len(ham)) || body != ham {
		t.Errorf("%s %s, Content-Length %d, body %q", r.Method, r.URL.Path, r.ContentLength, body)
	}
	want := map[string][]string{
		"Ip":       {"192.0.2.10"},
		"Helo":     {"mail.example.com"},
		"Hostname": {"mail.example.com"},
		"From":     {"alice@example.com"},
		"User":     {"alice"},
		"Queue-Id": {"4AbCdE"},
		"Rcpt":     {"bob@example.org", "carol@example.org"},
		"Password": {"s3cret"},
	}
	for name, values := range want {
		if !slices.Equal(r.Header.Values(name), values) {
			t.Errorf("%s: %q, want %q", name, r.Header.Values(name), values)
		}
	}

	// An empty envelope sends none of these headers.
	c.Password = ""
	if ev := check(c, context.Background(), ham, Envelope{}); ev.Err != nil {
		t.Fatal(ev.Err)
	}
	r = <-got
	<-bodies
	for name := range want {
		if v, ok := r.Header[name]; ok {
			t.Errorf("empty envelope: %s: %q", name, v)
		}
	}
}

// TestCancel: a cancelled check ends at once, even without a deadline.
func TestCancel(t *testing.T) {
	noLeaks(t)
	started := make(chan struct{})
	url := fakeRspamd(t, func(w http.ResponseWriter, r *http.Request) {
		// The server notices a closed connection only once it has
		// read the body.
		io.Copy(io.Discard, r.Body)
		close(started)
		<-r.Context().Done()
	})
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-started
		cancel()
	}()
	if ev := check(&Client{URL: url}, ctx, ham, envelope); !errors.Is(ev.Err, context.Canceled) {
		t.Errorf("Err = %v, want context.Canceled", ev.Err)
	}
}

func TestRefused(t *testing.T) {
	noLeaks(t)
	url := "http://" + enginetest.ClosedPort(t)
	ev := check(&Client{URL: url}, context.Background(), ham, envelope)
	if ev.Err == nil || errors.Is(ev.Err, ErrGarbage) || !strings.Contains(ev.Err.Error(), "refused") {
		t.Errorf("Err = %v, want connection refused", ev.Err)
	}
}

// TestMaxSize: a message over the limit is not sent at all; one at the
// limit is.
func TestMaxSize(t *testing.T) {
	noLeaks(t)
	var requests atomic.Int32
	url := fakeRspamd(t, func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		io.WriteString(w, `{"score":0,"required_score":15,"action":"no action"}`)
	})
	c := &Client{URL: url, MaxSize: int64(len(ham)) - 1}
	if ev := check(c, context.Background(), ham, envelope); !ev.Skipped || ev.Detail != "too large" || ev.Err != nil {
		t.Errorf("over MaxSize: %+v, want Skipped, too large", ev)
	}
	c.MaxSize++
	if ev := check(c, context.Background(), ham, envelope); ev.Skipped || ev.Err != nil {
		t.Errorf("at MaxSize: %+v, want scanned", ev)
	}
	if n := requests.Load(); n != 1 {
		t.Errorf("rspamd got %d requests, want 1", n)
	}
}

// TestBadInput: a message shorter than announced, or a header
// value with a line break, fail; an empty message is sent as such.
func TestBadInput(t *testing.T) {
	noLeaks(t)
	url := fakeRspamd(t, answer(200, `{"score":0,"required_score":15,"action":"no action"}`))
	c := &Client{URL: url}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if ev := c.Check(ctx, strings.NewReader(ham), int64(len(ham))+10, envelope); ev.Err == nil {
		t.Errorf("message shorter than its size: no error")
	}
	env := envelope
	env.Helo = "evil\r\nX-Injected: 1"
	if ev := check(c, ctx, ham, env); ev.Err == nil {
		t.Errorf("HELO with CRLF: no error")
	}
	if ev := check(c, ctx, "", envelope); ev.Err != nil {
		t.Errorf("empty message: %v", ev.Err)
	}
	if ev := check(&Client{URL: "::"}, ctx, ham, envelope); ev.Err == nil {
		t.Errorf("bad URL: no error")
	}
}

func FuzzParseReply(f *testing.F) {
	f.Add(`{"score":6.5,"required_score":15.0,"action":"add header","symbols":{"AA":{"score":0.5}}}`)
	f.Add(`{"error":"something"}`)
	f.Add(`{"score":1,"required_score":15}`)
	f.Fuzz(func(t *testing.T, s string) {
		ev, err := parseReply([]byte(s))
		if err == nil && (ev.Action == "" || !slices.IsSorted(ev.Symbols)) {
			t.Errorf("%q: %+v", s, ev)
		}
	})
}
