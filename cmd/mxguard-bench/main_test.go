package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/d--j/go-milter"
	"github.com/mxguard/mxguard/internal/enginetest"
)

var (
	plainMsg      = filepath.Join(corpusDir, "plain-2k.eml")
	newsletterMsg = filepath.Join(corpusDir, "newsletter-30k.eml")
	attachmentMsg = filepath.Join(corpusDir, "attachment-1m.eml")
)

// benchJSON runs the command with -json and returns its report, exit
// code and standard error.
func benchJSON(t *testing.T, args ...string) (report, int, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(append([]string{"-json", "-warmup", "0"}, args...), &stdout, &stderr, nil)
	var rep report
	if stdout.Len() > 0 {
		if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
			t.Fatalf("stdout is not JSON: %v\n%s", err, stdout.String())
		}
		if strings.Count(strings.TrimSpace(stdout.String()), "\n") != 0 {
			t.Errorf("stdout is more than one line:\n%s", stdout.String())
		}
	}
	return rep, code, stderr.String()
}

func startNoopT(t *testing.T) *noopServer {
	t.Helper()
	s, err := startNoop("inet:127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestNoop(t *testing.T) {
	s := startNoopT(t)
	rep, code, stderr := benchJSON(t, "-addr", s.Addr(), "-c", "4", "-n", "60",
		"-msg", plainMsg, "-msg", newsletterMsg, "-name", "noop-test")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if rep.Name != "noop-test" || rep.Addr != s.Addr() || rep.Concurrency != 4 || rep.PerConn != 1 {
		t.Errorf("report names %q %q c=%d per-conn=%d", rep.Name, rep.Addr, rep.Concurrency, rep.PerConn)
	}
	if rep.Messages != 60 || rep.Errors != 0 || rep.Sessions != 60 || rep.FirstError != "" {
		t.Errorf("messages %d, errors %d, sessions %d, first error %q; want 60, 0, 60, none",
			rep.Messages, rep.Errors, rep.Sessions, rep.FirstError)
	}
	want := map[string]int64{"accept": 60, "reject": 0, "tempfail": 0, "discard": 0, "quarantine": 0}
	if fmt.Sprint(rep.Actions) != fmt.Sprint(want) {
		t.Errorf("actions %v, want %v", rep.Actions, want)
	}
	if !(rep.P50Ms > 0 && rep.P50Ms <= rep.P99Ms && rep.P99Ms <= rep.MaxMs && rep.MaxMs < 30000) {
		t.Errorf("latencies p50 %v, p99 %v, max %v ms", rep.P50Ms, rep.P99Ms, rep.MaxMs)
	}
	if rep.DurationS <= 0 || rep.MsgsPerS <= 0 {
		t.Errorf("duration %v s, %v msgs/s", rep.DurationS, rep.MsgsPerS)
	}
	if rep.RSSPeakMiB != nil || rep.CPUMsPer1000 != nil {
		t.Error("server figures without -pid")
	}
}

// TestNoopCommand runs -noop as the command does, drives it for a while
// in text mode, and stops it.
func TestNoopCommand(t *testing.T) {
	pr, pw := io.Pipe()
	stop := make(chan struct{})
	exited := make(chan int)
	go func() {
		code := run([]string{"-noop", "-listen", "inet:127.0.0.1:0"}, io.Discard, pw, stop)
		pw.Close()
		exited <- code
	}()
	sc := bufio.NewScanner(pr)
	if !sc.Scan() {
		t.Fatal("no output from -noop")
	}
	addr, ok := strings.CutPrefix(sc.Text(), "listening on ")
	if !ok {
		t.Fatalf("first line %q, want listening on ADDR", sc.Text())
	}
	go io.Copy(io.Discard, pr)

	var stdout, stderr bytes.Buffer
	code := run([]string{"-addr", addr, "-c", "3", "-d", "300ms", "-per-conn", "2", "-warmup", "20",
		"-msg", plainMsg, "-pid", fmt.Sprint(os.Getpid())}, &stdout, &stderr, nil)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	out := stdout.String()
	for _, want := range []string{"name         plain-2k\n", "throughput ", "latency      p50 ", "actions      accept ",
		"server       RSS ", "3 concurrent sessions, 2 message(s) per connection"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	close(stop)
	select {
	case code := <-exited:
		if code != 0 {
			t.Errorf("-noop exit %d", code)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("-noop did not stop")
	}
}

// TestServerFigures samples this test's own process as "the server".
func TestServerFigures(t *testing.T) {
	s := startNoopT(t)
	rep, code, stderr := benchJSON(t, "-addr", s.Addr(), "-n", "200", "-c", "8", "-msg", attachmentMsg,
		"-pid", fmt.Sprint(os.Getpid()))
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if rep.RSSStartMiB == nil || rep.RSSPeakMiB == nil || rep.CPUMsPer1000 == nil {
		t.Fatalf("server figures missing: %+v", rep)
	}
	if !(*rep.RSSStartMiB > 1 && *rep.RSSPeakMiB >= *rep.RSSStartMiB && *rep.CPUMsPer1000 > 0) {
		t.Errorf("RSS %v MiB at start, %v peak, CPU %v ms per 1000", *rep.RSSStartMiB, *rep.RSSPeakMiB, *rep.CPUMsPer1000)
	}
}

func TestClosedPort(t *testing.T) {
	addr := "inet:" + enginetest.ClosedPort(t)
	rep, code, stderr := benchJSON(t, "-addr", addr, "-n", "5", "-c", "2", "-msg", plainMsg)
	if code == 0 {
		t.Error("exit 0 when every message failed")
	}
	if rep.Messages != 5 || rep.Errors != 5 || rep.Sessions != 0 || rep.MsgsPerS != 0 {
		t.Errorf("messages %d, errors %d, sessions %d, %v msgs/s; want 5, 5, 0, 0", rep.Messages, rep.Errors, rep.Sessions, rep.MsgsPerS)
	}
	if !strings.Contains(rep.FirstError, "connection refused") || !strings.Contains(stderr, "every message failed") {
		t.Errorf("first error %q, stderr %q", rep.FirstError, stderr)
	}
}

func TestUsage(t *testing.T) {
	for _, args := range [][]string{
		{"-n", "5", "-d", "1s", "-msg", plainMsg},
		{"-n", "5"},
		{"-c", "0", "-msg", plainMsg},
		{"-addr", "127.0.0.1:8894", "-msg", plainMsg},
		{"-warmup", "soon", "-msg", plainMsg},
		{"-msg", plainMsg, "extra"},
		{"-idle", "5"},
		{"-idle", "0", "-msg", plainMsg},
		{"-idle", "5", "-c", "2", "-msg", plainMsg},
		{"-idle", "5", "-warmup", "0", "-msg", plainMsg},
		{"-idle", "5", "-msg", plainMsg, "-msg", newsletterMsg},
		{"-idle", "5", "-big", "1MB", "-msg", plainMsg},
		{"-big", "1MB", "-msg", plainMsg},
		{"-big", "1MB", "-n", "2"},
		{"-big", "1MB", "-d", "1s"},
		{"-big", "100"},
		{"-big", "lots"},
		{"-big", "0"},
	} {
		var stderr bytes.Buffer
		if code := run(args, io.Discard, &stderr, nil); code != 2 {
			t.Errorf("%q: exit %d, want 2 (%s)", args, code, stderr.String())
		}
	}
}

// recorder is what the fake milter saw, over all its sessions.
type recorder struct {
	mu       sync.Mutex
	sessions int
	messages int // end of message
	aborts   int
	chunks   []int
	body     []byte   // of the last message
	headers  []header // of the last message
	macros   []string // per message: what some macros said at each stage
	queueIDs map[string]bool
}

// fakeMilter answers as its envelope asks: the sender's local part names
// the stage and the answer ("mail-reject@", "eom-tempfail@"...), a HELO of
// "helo-reject" refuses the connection.
type fakeMilter struct {
	milter.NoOpMilter
	rec    *recorder
	conn   []string // what connect and HELO said
	from   string
	seen   []string // what the current message's stages said
	chunks []int
	body   []byte
}

func (f *fakeMilter) NewConnection(milter.Modifier) error {
	f.rec.mu.Lock()
	f.rec.sessions++
	f.rec.mu.Unlock()
	return nil
}

func note(stage string, m milter.Modifier, names ...string) string {
	s := stage + ":"
	for _, n := range names {
		s += " " + n + "=" + m.Get(n)
	}
	return s
}

func (f *fakeMilter) Connect(host, family string, port uint16, addr string, m milter.Modifier) (*milter.Response, error) {
	f.conn = append(f.conn, note("connect", m, "j", "{daemon_name}", "{client_name}", "{client_ptr}", "{if_addr}"),
		"host="+host+" family="+family+" addr="+addr)
	return milter.RespContinue, nil
}

func (f *fakeMilter) Helo(name string, m milter.Modifier) (*milter.Response, error) {
	if name == "helo-reject" {
		return milter.RespReject, nil
	}
	return milter.RespContinue, nil
}

// answer is the response the sender asks for at stage.
func (f *fakeMilter) answer(stage string) *milter.Response {
	local, _, _ := strings.Cut(f.from, "@")
	st, ans, _ := strings.Cut(local, "-")
	if st != stage {
		return milter.RespContinue
	}
	switch ans {
	case "reject":
		return milter.RespReject
	case "tempfail":
		return milter.RespTempFail
	case "discard":
		return milter.RespDiscard
	case "code451":
		r, _ := milter.RejectWithCodeAndReason(451, "4.7.1 later")
		return r
	case "code550":
		r, _ := milter.RejectWithCodeAndReason(550, "5.7.1 no")
		return r
	case "hang":
		time.Sleep(2 * time.Second)
	}
	return milter.RespContinue
}

func (f *fakeMilter) MailFrom(from, esmtpArgs string, m milter.Modifier) (*milter.Response, error) {
	f.from, f.chunks, f.body = from, nil, nil
	f.seen = append(f.conn[:len(f.conn):len(f.conn)], note("mail", m, "i", "{auth_type}", "{auth_authen}"))
	return f.answer("mail"), nil
}

func (f *fakeMilter) RcptTo(rcpt, esmtpArgs string, m milter.Modifier) (*milter.Response, error) {
	f.seen = append(f.seen, note("rcpt", m, "i"))
	return f.answer("rcpt"), nil
}

func (f *fakeMilter) Data(m milter.Modifier) (*milter.Response, error) {
	f.seen = append(f.seen, note("data", m, "i"))
	return milter.RespContinue, nil
}

func (f *fakeMilter) Header(name, value string, m milter.Modifier) (*milter.Response, error) {
	if name == "From" {
		f.rec.mu.Lock()
		f.rec.headers = nil
		f.rec.mu.Unlock()
	}
	f.rec.mu.Lock()
	f.rec.headers = append(f.rec.headers, header{name, value})
	f.rec.mu.Unlock()
	return milter.RespContinue, nil
}

func (f *fakeMilter) BodyChunk(chunk []byte, m milter.Modifier) (*milter.Response, error) {
	f.chunks = append(f.chunks, len(chunk))
	f.body = append(f.body, chunk...)
	return milter.RespContinue, nil
}

func (f *fakeMilter) EndOfMessage(m milter.Modifier) (*milter.Response, error) {
	f.seen = append(f.seen, note("eom", m, "i"))
	f.rec.mu.Lock()
	f.rec.messages++
	f.rec.chunks, f.rec.body = f.chunks, f.body
	f.rec.macros = append(f.rec.macros, strings.Join(f.seen, "; "))
	f.rec.queueIDs[m.Get("i")] = true
	f.rec.mu.Unlock()
	if local, _, _ := strings.Cut(f.from, "@"); local == "quarantine" {
		m.Quarantine("held for review")
		return milter.RespAccept, nil
	}
	if r := f.answer("eom"); r != milter.RespContinue {
		return r, nil
	}
	return milter.RespAccept, nil
}

func (f *fakeMilter) Abort(milter.Modifier) error {
	f.rec.mu.Lock()
	f.rec.aborts++
	f.rec.mu.Unlock()
	return nil
}

// startFake serves fakeMilter with mxguard's options and macro requests.
func startFake(t *testing.T) (string, *recorder) {
	t.Helper()
	rec := &recorder{queueIDs: map[string]bool{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	opts := []milter.Option{
		milter.WithMilter(func() milter.Milter { return &fakeMilter{rec: rec} }),
		milter.WithActions(milter.OptAddHeader | milter.OptChangeHeader | milter.OptQuarantine),
		milter.WithProtocols(milter.OptHeaderLeadingSpace | milter.OptNoUnknown),
	}
	for st, names := range noopMacros {
		opts = append(opts, milter.WithMacroRequest(st, names))
	}
	srv := milter.NewServer(opts...)
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "inet:" + ln.Addr().String(), rec
}

func TestActions(t *testing.T) {
	for _, tc := range []struct {
		from, helo, want string
	}{
		{"news@news.bench.test", "", "accept"},
		{"eom-reject@x.test", "", "reject"},
		{"eom-tempfail@x.test", "", "tempfail"},
		{"eom-code451@x.test", "", "tempfail"},
		{"eom-code550@x.test", "", "reject"},
		{"eom-discard@x.test", "", "discard"},
		{"quarantine@x.test", "", "quarantine"},
		{"mail-reject@x.test", "", "reject"},
		{"mail-tempfail@x.test", "", "tempfail"},
		{"rcpt-tempfail@x.test", "", "tempfail"},
		{"rcpt-discard@x.test", "", "discard"},
		{"news@news.bench.test", "helo-reject", "reject"},
	} {
		t.Run(tc.from+"/"+tc.helo, func(t *testing.T) {
			addr, rec := startFake(t)
			args := []string{"-addr", addr, "-n", "6", "-c", "1", "-per-conn", "3", "-msg", plainMsg, "-from", tc.from,
				"-rcpt", "a@bench.test", "-rcpt", "b@bench.test"}
			if tc.helo != "" {
				args = append(args, "-helo", tc.helo)
			}
			rep, code, stderr := benchJSON(t, args...)
			if code != 0 || rep.Errors != 0 {
				t.Fatalf("exit %d, %d errors: %s %s", code, rep.Errors, rep.FirstError, stderr)
			}
			if rep.Messages != 6 || rep.Actions[tc.want] != 6 {
				t.Errorf("%d messages, actions %v; want 6 %s", rep.Messages, rep.Actions, tc.want)
			}
			rec.mu.Lock()
			defer rec.mu.Unlock()
			switch {
			case tc.helo != "":
				// Refused at HELO: every message opens a connection.
				if rec.sessions != 6 || rep.Sessions != 0 {
					t.Errorf("server saw %d sessions, report says %d; want 6 and 0", rec.sessions, rep.Sessions)
				}
			case rec.sessions != 2 || rep.Sessions != 2:
				t.Errorf("server saw %d sessions, report says %d; want 2", rec.sessions, rep.Sessions)
			}
		})
	}
}

func TestTimeout(t *testing.T) {
	addr, _ := startFake(t)
	start := time.Now()
	rep, code, _ := benchJSON(t, "-addr", addr, "-n", "2", "-c", "2", "-timeout", "300ms", "-msg", plainMsg, "-from", "eom-hang@x.test")
	if code == 0 || rep.Errors != 2 || !strings.Contains(rep.FirstError, "timeout") {
		t.Errorf("exit %d, %d errors, first %q; want failure, 2, a timeout", code, rep.Errors, rep.FirstError)
	}
	if d := time.Since(start); d > 1500*time.Millisecond {
		t.Errorf("took %v with a 300ms timeout per message", d)
	}
}

// TestPerConn checks connection reuse and what Postfix tells the milter
// at each stage.
func TestPerConn(t *testing.T) {
	addr, rec := startFake(t)
	rep, code, stderr := benchJSON(t, "-addr", addr, "-n", "20", "-c", "1", "-per-conn", "5", "-msg", plainMsg,
		"-auth", "alice", "-queue-id-prefix", "4F", "-client-name", "unknown", "-rcpt", "a@bench.test", "-rcpt", "b@bench.test")
	if code != 0 || rep.Errors != 0 {
		t.Fatalf("exit %d: %s %s", code, rep.FirstError, stderr)
	}
	// The last ABORT and QUIT may still be on their way.
	for end := time.Now().Add(time.Second); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		rec.mu.Lock()
		n := rec.aborts
		rec.mu.Unlock()
		if n >= 20 {
			break
		}
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if rec.sessions != 4 || rep.Sessions != 4 || rec.messages != 20 || rep.Actions["accept"] != 20 {
		t.Errorf("server: %d sessions, %d messages; report: %d sessions, %v; want 4, 20",
			rec.sessions, rec.messages, rep.Sessions, rep.Actions)
	}
	// smtpd's mail_reset aborts after every transaction.
	if rec.aborts != 20 {
		t.Errorf("%d aborts, want 20", rec.aborts)
	}
	if len(rec.queueIDs) != 20 {
		t.Errorf("%d distinct queue ids, want 20: %v", len(rec.queueIDs), rec.queueIDs)
	}
	for qid := range rec.queueIDs {
		if len(qid) != 9 || !strings.HasPrefix(qid, "4F") {
			t.Errorf("queue id %q, want 4F and 7 hex digits", qid)
		}
	}
	// The queue id arrives with the second recipient (the queue file is
	// open after the first one was accepted); no {if_addr} from Postfix.
	want := "connect: j=mx.bench.test {daemon_name}=mx.bench.test {client_name}=unknown {client_ptr}=unknown {if_addr}=; " +
		"host=[192.0.2.10] family=tcp4 addr=192.0.2.10; " +
		"mail: i= {auth_type}=PLAIN {auth_authen}=alice; rcpt: i=; rcpt: i=QID; data: i=QID; eom: i=QID"
	for i, got := range rec.macros {
		qid := got[strings.LastIndex(got, "=")+1:]
		if g := strings.ReplaceAll(got, qid, "QID"); g != want {
			t.Errorf("message %d:\n got %s\nwant %s", i, g, want)
		}
	}
}

func TestBodyAndHeaders(t *testing.T) {
	addr, rec := startFake(t)
	for _, path := range []string{attachmentMsg, newsletterMsg} {
		rep, code, stderr := benchJSON(t, "-addr", addr, "-n", "1", "-msg", path)
		if code != 0 || rep.Errors != 0 {
			t.Fatalf("exit %d: %s %s", code, rep.FirstError, stderr)
		}
		raw, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		_, body, _ := bytes.Cut(raw, []byte("\r\n\r\n"))
		rec.mu.Lock()
		total := 0
		for i, n := range rec.chunks {
			total += n
			if n > 65535 || (i < len(rec.chunks)-1 && n != 65535) {
				t.Errorf("%s: chunk %d of %d is %d bytes", path, i, len(rec.chunks), n)
			}
		}
		if total != len(body) {
			t.Errorf("%s: %d body bytes in %d chunks, want %d", path, total, len(rec.chunks), len(body))
		}
		hs := rec.headers
		rec.mu.Unlock()
		if path == newsletterMsg {
			want := header{"List-Unsubscribe", " <https://news.bench.test/unsubscribe?u=someone>,\n <mailto:unsubscribe@news.bench.test?subject=unsubscribe>"}
			found := false
			for _, h := range hs {
				found = found || h == want
			}
			if !found {
				t.Errorf("the folded List-Unsubscribe did not arrive as Postfix sends it: %q", hs)
			}
		}
	}
}

func TestParseMessage(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		headers  []header
		body     string
	}{
		{"lf", "From: a@b\nSubject:  hi\n\tthere\n\nline 1\nline 2\n",
			[]header{{"From", " a@b"}, {"Subject", "  hi\n\tthere"}}, "line 1\r\nline 2\r\n"},
		{"crlf", "From : a@b\r\nX-Empty:\r\n\r\nbody", []header{{"From", " a@b"}, {"X-Empty", ""}}, "body\r\n"},
		{"no body", "From: a@b\n", []header{{"From", " a@b"}}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := parseMessage([]byte(tc.in))
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(m.headers) != fmt.Sprint(tc.headers) || string(bytes.Join(m.chunks, nil)) != tc.body {
				t.Errorf("got %q %q, want %q %q", m.headers, bytes.Join(m.chunks, nil), tc.headers, tc.body)
			}
		})
	}
	for _, bad := range []string{"", "\nbody", " folded\nFrom: a\n\n", "From a@b\n\nx", "Bad Name: x\n\n"} {
		if _, err := parseMessage([]byte(bad)); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func TestWriteEicar(t *testing.T) {
	path := filepath.Join(t.TempDir(), "eicar.eml")
	if code := run([]string{"-write-eicar", path}, io.Discard, io.Discard, nil); code != 0 {
		t.Fatalf("exit %d", code)
	}
	m, err := loadMessage(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(bytes.Join(m.chunks, nil), []byte("WDVPIVAlQEFQWzRcUFpYNTQoUF4pN0NDKTd9JEVJQ0FSLVNUQU5EQVJELUFOVElWSVJVUy1URVNULUZJTEUhJEgrSCo=")) {
		t.Error("no EICAR attachment")
	}
}
