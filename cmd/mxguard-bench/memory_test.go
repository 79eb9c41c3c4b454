package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/mail"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/enginetest"
)

// runJSON runs the command with -json, decodes its report into v and
// returns the exit code and standard error.
func runJSON(t *testing.T, v any, args ...string) (int, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(append([]string{"-json"}, args...), &stdout, &stderr, nil)
	if stdout.Len() > 0 {
		if err := json.Unmarshal(stdout.Bytes(), v); err != nil {
			t.Fatalf("stdout is not JSON: %v\n%s", err, stdout.String())
		}
		if strings.Count(strings.TrimSpace(stdout.String()), "\n") != 0 {
			t.Errorf("stdout is more than one line:\n%s", stdout.String())
		}
	}
	return code, stderr.String()
}

// bodyLen is the size of a message file's body as Postfix sends it.
func bodyLen(t *testing.T, path string) int {
	t.Helper()
	m, err := loadMessage(path)
	if err != nil {
		t.Fatal(err)
	}
	return len(bytes.Join(m.chunks, nil))
}

// waitFor polls cond for a second.
func waitFor(cond func() bool) bool {
	for end := time.Now().Add(time.Second); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return true
		}
	}
	return cond()
}

func TestIdle(t *testing.T) {
	for _, tc := range []struct {
		path  string
		chunk int
	}{
		{attachmentMsg, 65535},                     // the first of many chunks
		{plainMsg, bodyLen(t, plainMsg)},           // the whole body, one chunk
		{newsletterMsg, bodyLen(t, newsletterMsg)}, // the bench's
	} {
		t.Run(tc.path, func(t *testing.T) {
			s := startNoopT(t)
			const n = 40
			var rep idleReport
			code, stderr := runJSON(t, &rep, "-addr", s.Addr(), "-idle", fmt.Sprint(n), "-d", "300ms", "-msg", tc.path,
				"-pid", fmt.Sprint(os.Getpid()), "-name", "idle-test")
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			if rep.Mode != "idle" || rep.Name != "idle-test" || rep.Addr != s.Addr() {
				t.Errorf("report names %q %q %q", rep.Mode, rep.Name, rep.Addr)
			}
			if rep.Sessions != n || rep.Errors != 0 || rep.FirstError != "" || rep.ChunkBytes != tc.chunk {
				t.Errorf("%d sessions, %d errors (%q), chunk %d bytes; want %d, 0, %d", rep.Sessions, rep.Errors, rep.FirstError,
					rep.ChunkBytes, n, tc.chunk)
			}
			if rep.HoldS != 0.3 || rep.OpenS <= 0 || rep.OpenS > 10 {
				t.Errorf("hold %v s, open %v s", rep.HoldS, rep.OpenS)
			}
			if rep.RSSStartMiB == nil || rep.RSSPeakMiB == nil || rep.RSSPerSessionKiB == nil {
				t.Fatalf("server figures missing: %+v", rep)
			}
			if !(*rep.RSSStartMiB > 1 && *rep.RSSPeakMiB >= *rep.RSSStartMiB && *rep.RSSPerSessionKiB >= 0) {
				t.Errorf("RSS %v MiB at start, %v peak, %v KiB per session", *rep.RSSStartMiB, *rep.RSSPeakMiB, *rep.RSSPerSessionKiB)
			}
			// Every session was open at once, had its first chunk, and
			// none ended its message; then each was aborted and closed.
			st := &s.stats
			if !waitFor(func() bool { return st.open.Load() == 0 && st.aborts.Load() == n }) {
				t.Errorf("after the release: %d sessions open, %d aborts; want 0, %d", st.open.Load(), st.aborts.Load(), n)
			}
			if st.peakOpen.Load() != n || st.bodyBytes.Load() != int64(n*tc.chunk) || st.messages.Load() != 0 {
				t.Errorf("the server saw %d sessions at once, %d body bytes, %d messages; want %d, %d, 0",
					st.peakOpen.Load(), st.bodyBytes.Load(), st.messages.Load(), n, n*tc.chunk)
			}
		})
	}
}

// TestIdleRefused: sessions the milter refuses on the way are errors.
func TestIdleRefused(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-helo", "helo-reject"}, "the milter answered reject at connect or HELO"},
		{[]string{"-from", "mail-tempfail@x.test"}, "the milter answered tempfail before the end of DATA"},
	} {
		t.Run(tc.want, func(t *testing.T) {
			addr, rec := startFake(t)
			var rep idleReport
			code, stderr := runJSON(t, &rep, append([]string{"-addr", addr, "-idle", "6", "-d", "10ms", "-msg", plainMsg}, tc.args...)...)
			if code != 1 || !strings.Contains(stderr, "no session could be opened") {
				t.Errorf("exit %d (%s), want 1", code, stderr)
			}
			if rep.Sessions != 0 || rep.Errors != 6 || rep.FirstError != tc.want || rep.RSSPeakMiB != nil {
				t.Errorf("%d sessions, %d errors, first %q, peak %v; want 0, 6, %q, none", rep.Sessions, rep.Errors, rep.FirstError,
					rep.RSSPeakMiB, tc.want)
			}
			rec.mu.Lock()
			defer rec.mu.Unlock()
			if rec.sessions != 6 {
				t.Errorf("the milter saw %d sessions, want 6", rec.sessions)
			}
		})
	}
}

func TestIdleClosedPort(t *testing.T) {
	addr := "inet:" + enginetest.ClosedPort(t)
	var rep idleReport
	code, _ := runJSON(t, &rep, "-addr", addr, "-idle", "3", "-d", "10ms", "-msg", plainMsg)
	if code != 1 || rep.Sessions != 0 || rep.Errors != 3 || !strings.Contains(rep.FirstError, "connection refused") {
		t.Errorf("exit %d, %d sessions, %d errors, first %q", code, rep.Sessions, rep.Errors, rep.FirstError)
	}
}

func TestIdleText(t *testing.T) {
	s := startNoopT(t)
	var stdout, stderr bytes.Buffer
	code := run([]string{"-addr", s.Addr(), "-idle", "5", "-d", "50ms", "-msg", plainMsg, "-pid", fmt.Sprint(os.Getpid())},
		&stdout, &stderr, nil)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	for _, want := range []string{"name         plain-2k\n", "sessions held in DATA for 0.050 s", "sessions     5 open in ",
		"server       RSS ", " KiB per session\n"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, stdout.String())
		}
	}
}

func TestBig(t *testing.T) {
	s := startNoopT(t)
	const size = 3 << 20
	var rep report
	code, stderr := runJSON(t, &rep, "-addr", s.Addr(), "-big", "3MB", "-pid", fmt.Sprint(os.Getpid()))
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if rep.Mode != "big" || rep.Name != "big-3MB" || rep.SizeBytes != size || rep.Concurrency != 1 {
		t.Errorf("mode %q, name %q, %d bytes, c=%d", rep.Mode, rep.Name, rep.SizeBytes, rep.Concurrency)
	}
	if rep.Messages != 1 || rep.Errors != 0 || rep.Sessions != 1 || rep.Actions["accept"] != 1 || rep.MaxMs <= 0 {
		t.Errorf("%d messages, %d errors (%s), %d sessions, %v, %v ms", rep.Messages, rep.Errors, rep.FirstError, rep.Sessions,
			rep.Actions, rep.MaxMs)
	}
	if rep.RSSStartMiB == nil || rep.RSSPeakMiB == nil || *rep.RSSPeakMiB < *rep.RSSStartMiB {
		t.Errorf("RSS %v at start, %v peak", rep.RSSStartMiB, rep.RSSPeakMiB)
	}
	m, err := newBigMessage(size)
	if err != nil {
		t.Fatal(err)
	}
	want := int64(size - headerSize(m.headers) - 2)
	st := &s.stats
	if st.messages.Load() != 1 || st.bodyBytes.Load() != want {
		t.Errorf("the server saw %d messages, %d body bytes; want 1, %d", st.messages.Load(), st.bodyBytes.Load(), want)
	}

	// A load test's report has no size.
	var load map[string]any
	if code, stderr := runJSON(t, &load, "-addr", s.Addr(), "-n", "1", "-msg", plainMsg); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if _, ok := load["size_bytes"]; ok || load["mode"] != "load" {
		t.Errorf("a load test's report: %v", load)
	}
}

// TestBigArrives checks the generated message as the milter gets it: in
// chunks of 65,535 bytes, whole, a valid MIME message with the attachment
// in lines of 76 characters, the same at every run.
func TestBigArrives(t *testing.T) {
	addr, rec := startFake(t)
	const size = 1<<20 + 12345
	var bodies [][]byte
	for range 2 {
		var rep report
		if code, stderr := runJSON(t, &rep, "-addr", addr, "-big", fmt.Sprint(size)); code != 0 || rep.Actions["accept"] != 1 {
			t.Fatalf("exit %d, %v: %s %s", code, rep.Actions, rep.FirstError, stderr)
		}
		rec.mu.Lock()
		for i, n := range rec.chunks {
			if n > 65535 || (i < len(rec.chunks)-1 && n != 65535) {
				t.Errorf("chunk %d of %d is %d bytes", i, len(rec.chunks), n)
			}
		}
		var head strings.Builder
		for _, h := range rec.headers {
			fmt.Fprintf(&head, "%s:%s\r\n", h.name, strings.ReplaceAll(h.value, "\n", "\r\n"))
		}
		bodies = append(bodies, append([]byte(head.String()+"\r\n"), rec.body...))
		rec.mu.Unlock()
	}
	msg := bodies[0]
	if !bytes.Equal(msg, bodies[1]) {
		t.Error("two runs sent different messages")
	}
	if len(msg) != size {
		t.Fatalf("%d bytes arrived, want %d", len(msg), size)
	}
	lines := strings.SplitAfter(string(msg), "\r\n")
	if lines[len(lines)-1] != "" {
		t.Error("the message does not end with CRLF")
	}
	for i, line := range lines[:len(lines)-1] {
		if text := strings.TrimSuffix(line, "\r\n"); len(text) > 98 || strings.ContainsAny(text, "\r\n") {
			t.Fatalf("line %d: %.100q", i+1, line)
		}
	}

	m, err := mail.ReadMessage(bytes.NewReader(msg))
	if err != nil {
		t.Fatal(err)
	}
	mt, params, err := mime.ParseMediaType(m.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/mixed" {
		t.Fatalf("Content-Type %q: %v", m.Header.Get("Content-Type"), err)
	}
	mr := multipart.NewReader(m.Body, params["boundary"])
	var parts []string
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		raw, err := io.ReadAll(p)
		if err != nil {
			t.Fatal(err)
		}
		parts = append(parts, p.Header.Get("Content-Type"))
		if p.FileName() != "archive.bin" {
			continue
		}
		lines := strings.Split(strings.TrimSuffix(string(raw), "\r\n"), "\r\n")
		for i, l := range lines {
			if len(l) != 76 {
				t.Fatalf("attachment line %d is %d characters", i+1, len(l))
			}
		}
		data, err := base64.StdEncoding.DecodeString(strings.Join(lines, ""))
		if err != nil || len(data) != len(lines)*57 || len(data) < size*7/10 {
			t.Errorf("attachment: %d bytes in %d lines, %v", len(data), len(lines), err)
		}
	}
	if fmt.Sprint(parts) != `[text/plain; charset=utf-8 application/octet-stream; name="archive.bin"]` {
		t.Errorf("parts %q", parts)
	}
}

// TestBigSize: the generated message has the size asked for, whatever it
// is, and is made chunk by chunk, not held whole.
func TestBigSize(t *testing.T) {
	sizes := []int{1 << 20, 1<<20 + 1, 32 << 20}
	for n := bigMin(); n < bigMin()+2*bigLineLen+3; n++ {
		sizes = append(sizes, n)
	}
	for _, size := range sizes {
		m, err := newBigMessage(size)
		if err != nil {
			t.Fatal(err)
		}
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		body, chunks := 0, 0
		for c := range m.bodyChunks() {
			body += len(c)
			chunks++
		}
		runtime.ReadMemStats(&after)
		if got := headerSize(m.headers) + 2 + body; got != size || m.size != size {
			t.Errorf("-big %d: %d bytes (SIZE=%d)", size, got, m.size)
		}
		if chunks != (body+chunkSize-1)/chunkSize {
			t.Errorf("-big %d: %d chunks for %d bytes", size, chunks, body)
		}
		if a := after.TotalAlloc - before.TotalAlloc; a > 1<<20 {
			t.Errorf("-big %d: %d bytes allocated to make it", size, a)
		}
	}
	if _, err := newBigMessage(bigMin() - 1); err == nil {
		t.Errorf("-big %d: no error", bigMin()-1)
	}
}
