package clamd

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/enginetest"
)

// The signature name of scripts/engines/clamd-test.ndb, as clamd reports
// it: names from a database that is not ClamAV's own get ".UNOFFICIAL".
const eicarSignature = "Eicar-Test-Signature.UNOFFICIAL"

// eicar is the EICAR anti-virus test file, put together here so that this
// source file itself is not detected.
func eicar() string {
	return `X5O!P%@AP[4\PZX54(P^)7CC)7}$` + "EICAR-STANDARD-ANTIVIRUS-" + "TEST-FILE!$H+H*"
}

// eicarAttached is a mail with EICAR as a base64 attachment: only clamd's
// MIME decoding can find it.
func eicarAttached() string {
	return "From: alice@example.com\r\nTo: bob@example.net\r\nSubject: report\r\n" +
		"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n" +
		"--b1\r\nContent-Type: text/plain\r\n\r\nSee the attachment.\r\n" +
		"--b1\r\nContent-Type: application/octet-stream; name=\"report.com\"\r\n" +
		"Content-Disposition: attachment; filename=\"report.com\"\r\n" +
		"Content-Transfer-Encoding: base64\r\n\r\n" +
		base64.StdEncoding.EncodeToString([]byte(eicar())) + "\r\n--b1--\r\n"
}

// eicarAttachedLarge is eicarAttached after 2 MiB of text: over the
// unix socket it goes to clamd in a file on disk, not in memory.
func eicarAttachedLarge() string {
	text := strings.Repeat("All work and no play makes Jack a dull boy.\r\n", 2<<20/46)
	return strings.Replace(eicarAttached(), "See the attachment.\r\n", text, 1)
}

func eicarInBody() string {
	return "From: alice@example.com\r\nTo: bob@example.net\r\nSubject: test\r\n\r\n" + eicar() + "\r\n"
}

func TestScanRealClamd(t *testing.T) {
	clean, err := os.ReadFile(filepath.Join("testdata", "clean.eml"))
	if err != nil {
		t.Fatal(err)
	}
	addrs := map[string]string{"inet": enginetest.Clamd(t), "unix": enginetest.ClamdUnix(t)}
	tests := []struct {
		name      string
		msg       string
		chunkSize int
		want      Result
		signature string
	}{
		{"clean mail", string(clean), 0, Clean, ""},
		{"EICAR attached", eicarAttached(), 0, Infected, eicarSignature},
		{"EICAR in the body", eicarInBody(), 0, Infected, eicarSignature},
		{"EICAR alone", eicar(), 0, Infected, eicarSignature},
		{"EICAR across 7-byte chunks", eicarAttached(), 7, Infected, eicarSignature},
		{"EICAR attached after 2 MiB", eicarAttachedLarge(), 0, Infected, eicarSignature},
		{"empty", "", 0, Clean, ""},
	}
	for kind, addr := range addrs {
		for _, tt := range tests {
			t.Run(kind+"/"+tt.name, func(t *testing.T) {
				checkNoLeak(t)
				c := &Client{Address: addr, ChunkSize: tt.chunkSize}
				defer c.Close()
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				ev := c.Scan(ctx, strings.NewReader(tt.msg), int64(len(tt.msg)))
				if ev.Result != tt.want || ev.Signature != tt.signature || ev.Err != nil {
					t.Errorf("Scan = %+v, want %s %q", ev, tt.want, tt.signature)
				}
			})
		}
		// One Client, one clamd session for every message, whether
		// passed in a file (of a known size, over the unix socket) or
		// streamed.
		t.Run(kind+"/one session", func(t *testing.T) {
			checkNoLeak(t)
			c := &Client{Address: addr}
			defer c.Close()
			for i, tt := range append(tests, tests...) {
				size := int64(len(tt.msg))
				if i >= len(tests) {
					size = -1
				}
				ev := c.Scan(t.Context(), strings.NewReader(tt.msg), size)
				if ev.Result != tt.want || ev.Signature != tt.signature || ev.Err != nil {
					t.Errorf("%s: Scan = %+v, want %s %q", tt.name, ev, tt.want, tt.signature)
				}
			}
			if n := c.pool.dials.Load(); n != 1 {
				t.Errorf("%d connections for %d scans, want 1", n, 2*len(tests))
			}
		})
		t.Run(kind+"/ping", func(t *testing.T) {
			if err := (&Client{Address: addr}).Ping(context.Background()); err != nil {
				t.Error(err)
			}
		})
	}
}

// A message over clamd's StreamMaxLength (25M in clamd.sh): clamd answers
// while we are still writing and closes; the answer must not be lost.
func TestScanRealClamdStreamLimit(t *testing.T) {
	checkNoLeak(t)
	c := &Client{Address: enginetest.Clamd(t)}
	defer c.Close()
	size := int64(26 << 20)
	ev := c.Scan(t.Context(), io.LimitReader(zeros{}, size), size)
	if ev.Result != Error || !errors.Is(ev.Err, ErrEngine) || ev.Detail != "INSTREAM size limit exceeded. ERROR" {
		t.Errorf("Scan = %+v, want Error, ErrEngine and clamd's answer", ev)
	}
	// clamd closed that session; the next scan opens another.
	msg := eicarInBody()
	if ev := c.Scan(t.Context(), strings.NewReader(msg), int64(len(msg))); ev.Result != Infected {
		t.Errorf("the scan after it = %+v, want Infected", ev)
	}
	if n := c.pool.dials.Load(); n != 2 {
		t.Errorf("%d connections, want 2", n)
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// The bytes on the wire, checked by a fake clamd that decodes them.
// TestScanProtocol: what clamd receives is the command, the message in
// chunks of ChunkSize and the terminator, whatever the message's length.
func TestScanProtocol(t *testing.T) {
	checkNoLeak(t)
	type stream struct {
		data   []byte
		chunks []int
	}
	streams := make(chan stream, 1)
	addr := fakeClamd(t, func(conn net.Conn) {
		data, chunks, err := readInstream(conn)
		if err != nil {
			t.Errorf("fake clamd: %v", err)
		}
		streams <- stream{data, chunks}
		conn.Write([]byte("stream: OK\x00"))
	})
	for _, tt := range []struct {
		size, chunkSize int
		chunks          []int
	}{
		{100, 40, []int{40, 40, 20}},
		{80, 40, []int{40, 40}}, // the last read finds nothing: the terminator goes alone
		{0, 40, nil},
		{100, 0, []int{100}}, // the default chunk size, from the pool
		{defaultChunkSize + 1, 0, []int{defaultChunkSize, 1}},
	} {
		msg := strings.Repeat("0123456789", tt.size/10+1)[:tt.size]
		ev := (&Client{Address: addr, ChunkSize: tt.chunkSize}).Scan(t.Context(), strings.NewReader(msg), -1)
		if ev.Result != Clean {
			t.Fatalf("%d bytes in chunks of %d: Scan = %+v, want Clean", tt.size, tt.chunkSize, ev)
		}
		s := <-streams
		if got, chunks := s.data, s.chunks; string(got) != msg || !slices.Equal(chunks, tt.chunks) {
			t.Errorf("%d bytes in chunks of %d: clamd got %d bytes in chunks %v, want the message in chunks %v",
				tt.size, tt.chunkSize, len(got), chunks, tt.chunks)
		}
	}
}

// readInstream reads what a client sends for zINSTREAM: the command, then
// chunks up to the zero-length one. The zIDSESSION that opens a
// connection is skipped.
func readInstream(conn net.Conn) (data []byte, chunks []int, err error) {
	cmd := make([]byte, len("zINSTREAM\x00"))
	if _, err := io.ReadFull(conn, cmd); err != nil {
		return nil, nil, err
	}
	if string(cmd) == "zIDSESSION\x00"[:len(cmd)] {
		rest := make([]byte, len("zIDSESSION\x00")-len(cmd))
		if _, err := io.ReadFull(conn, rest); err != nil || string(rest) != "\x00" {
			return nil, nil, fmt.Errorf("bad command %q%q", cmd, rest)
		}
		if _, err := io.ReadFull(conn, cmd); err != nil {
			return nil, nil, err
		}
	}
	if string(cmd) != "zINSTREAM\x00" {
		return nil, nil, errors.New("bad command " + string(cmd))
	}
	for {
		var n uint32
		if err := binary.Read(conn, binary.BigEndian, &n); err != nil {
			return nil, nil, err
		}
		if n == 0 {
			return data, chunks, nil
		}
		buf := make([]byte, n)
		if _, err := io.ReadFull(conn, buf); err != nil {
			return nil, nil, err
		}
		data, chunks = append(data, buf...), append(chunks, int(n))
	}
}

// Faults of clamd, each played by a fake clamd on loopback.
func TestScanFaults(t *testing.T) {
	tests := []struct {
		name    string
		clamd   func(net.Conn)
		timeout time.Duration
		kind    error
		detail  string
	}{
		{"hangs", func(conn net.Conn) { io.Copy(io.Discard, conn) }, 300 * time.Millisecond, ErrTimeout, ""},
		{"answers half a line", func(conn net.Conn) {
			readInstream(conn)
			conn.Write([]byte("stream: "))
			io.Copy(io.Discard, conn)
		}, 300 * time.Millisecond, ErrTimeout, ""},
		{"says garbage", answer("hello, world\x00"), 5 * time.Second, ErrGarbage, "hello, world"},
		{"says FOUND without a name", answer("stream:  FOUND\x00"), 5 * time.Second, ErrGarbage, "stream:  FOUND"},
		{"says too much", answer(strings.Repeat("x", 10000)), 5 * time.Second, ErrGarbage, ""},
		{"closes at once", func(conn net.Conn) {}, 5 * time.Second, ErrUnreachable, ""},
		{"closes after the message", func(conn net.Conn) { readInstream(conn) }, 5 * time.Second, ErrUnreachable, ""},
		{"size limit", func(conn net.Conn) {
			conn.Read(make([]byte, 100))
			conn.Write([]byte("INSTREAM size limit exceeded. ERROR\x00"))
		}, 5 * time.Second, ErrEngine, "INSTREAM size limit exceeded. ERROR"},
		{"other error", answer("stream: Can't allocate memory ERROR\x00"), 5 * time.Second, ErrEngine, "stream: Can't allocate memory ERROR"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkNoLeak(t)
			addr := fakeClamd(t, tt.clamd)
			ctx, cancel := context.WithTimeout(context.Background(), tt.timeout)
			defer cancel()
			msg := eicarInBody()
			start := time.Now()
			ev := (&Client{Address: addr}).Scan(ctx, strings.NewReader(msg), int64(len(msg)))
			if ev.Result != Error || !errors.Is(ev.Err, tt.kind) || ev.Detail != tt.detail {
				t.Errorf("Scan = %+v, want Error, %v and Detail %q", ev, tt.kind, tt.detail)
			}
			if tt.kind == ErrTimeout && !errors.Is(ev.Err, context.DeadlineExceeded) {
				t.Errorf("Err = %v, want it to wrap context.DeadlineExceeded", ev.Err)
			}
			if d := time.Since(start); d > tt.timeout+time.Second {
				t.Errorf("Scan took %v, past the deadline of %v", d, tt.timeout)
			}
		})
	}
}

// answer is a fake clamd that reads the command and the message and
// answers reply.
func answer(reply string) func(net.Conn) {
	return func(conn net.Conn) {
		readInstream(conn)
		conn.Write([]byte(reply))
	}
}

// Cancelling ctx, which has no deadline, ends a scan of a hung clamd.
func TestScanCancelled(t *testing.T) {
	checkNoLeak(t)
	addr := fakeClamd(t, func(conn net.Conn) { io.Copy(io.Discard, conn) })
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(200*time.Millisecond, cancel)
	ev := (&Client{Address: addr}).Scan(ctx, strings.NewReader("hello"), 5)
	if ev.Result != Error || !errors.Is(ev.Err, ErrTimeout) || !errors.Is(ev.Err, context.Canceled) {
		t.Errorf("Scan = %+v, want Error, ErrTimeout and context.Canceled", ev)
	}
}

func TestScanUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := "inet:" + l.Addr().String()
	l.Close()
	for _, addr := range []string{refused, "unix:" + filepath.Join(t.TempDir(), "none.sock"), "tcp:127.0.0.1:3310"} {
		t.Run(addr, func(t *testing.T) {
			checkNoLeak(t)
			c := &Client{Address: addr}
			ev := c.Scan(t.Context(), strings.NewReader("hello"), 5)
			if ev.Result != Error || !errors.Is(ev.Err, ErrUnreachable) {
				t.Errorf("Scan = %+v, want Error and ErrUnreachable", ev)
			}
			if err := c.Ping(t.Context()); !errors.Is(err, ErrUnreachable) {
				t.Errorf("Ping = %v, want ErrUnreachable", err)
			}
		})
	}
}

func TestScanMaxSize(t *testing.T) {
	checkNoLeak(t)
	// Nothing listens there: any attempt to connect would be an Error.
	nowhere := &Client{Address: "unix:" + filepath.Join(t.TempDir(), "none.sock"), MaxSize: 10}
	ev := nowhere.Scan(t.Context(), strings.NewReader("eleven byte"), 11)
	if ev.Result != Skipped || ev.Detail != "too large" || ev.Err != nil {
		t.Errorf("Scan of a known size = %+v, want Skipped, too large", ev)
	}

	// Of a message of unknown size, no more than MaxSize bytes are sent,
	// and no terminator.
	sent := make(chan []byte, 1)
	addr := fakeClamd(t, func(conn net.Conn) {
		b, _ := io.ReadAll(conn)
		sent <- b
	})
	c := &Client{Address: addr, MaxSize: 10, ChunkSize: 4}
	ev = c.Scan(t.Context(), strings.NewReader("eleven byte"), -1)
	if ev.Result != Skipped || ev.Detail != "too large" || ev.Err != nil {
		t.Errorf("Scan of an unknown size = %+v, want Skipped, too large", ev)
	}
	if got, want := <-sent, "zIDSESSION\x00zINSTREAM\x00\x00\x00\x00\x04elev\x00\x00\x00\x04en b"; string(got) != want {
		t.Errorf("clamd got %q, want %q: the command and 8 bytes", got, want)
	}
}

func TestScanReadError(t *testing.T) {
	checkNoLeak(t)
	addr := fakeClamd(t, func(conn net.Conn) { io.Copy(io.Discard, conn) })
	broken := io.MultiReader(strings.NewReader("hello"), iotestErrReader{})
	ev := (&Client{Address: addr}).Scan(t.Context(), broken, -1)
	if ev.Result != Error || !errors.Is(ev.Err, errDisk) {
		t.Errorf("Scan = %+v, want Error wrapping %v", ev, errDisk)
	}
}

var errDisk = errors.New("disk on fire")

type iotestErrReader struct{}

func (iotestErrReader) Read([]byte) (int, error) { return 0, errDisk }

func TestPingFaults(t *testing.T) {
	for _, tt := range []struct {
		reply string
		kind  error
	}{
		{"PONG\x00", nil},
		{"PONG", nil},
		{"PANG\x00", ErrGarbage},
		{"", ErrUnreachable},
	} {
		t.Run(tt.reply, func(t *testing.T) {
			checkNoLeak(t)
			addr := fakeClamd(t, func(conn net.Conn) {
				cmd := make([]byte, len("zPING\x00"))
				if _, err := io.ReadFull(conn, cmd); err != nil || string(cmd) != "zPING\x00" {
					t.Errorf("fake clamd got %q, %v", cmd, err)
				}
				conn.Write([]byte(tt.reply))
			})
			if err := (&Client{Address: addr}).Ping(t.Context()); !errors.Is(err, tt.kind) || (err == nil) != (tt.kind == nil) {
				t.Errorf("Ping = %v, want %v", err, tt.kind)
			}
		})
	}
}

func TestParseAddress(t *testing.T) {
	tests := []struct {
		in, network, addr string
		err               string
	}{
		{"unix:/run/clamav/clamd.ctl", "unix", "/run/clamav/clamd.ctl", ""},
		{"inet:127.0.0.1:3310", "tcp", "127.0.0.1:3310", ""},
		{"inet:[::1]:3310", "tcp", "[::1]:3310", ""},
		{"inet:localhost:3310", "tcp", "localhost:3310", ""},
		{"/run/clamav/clamd.ctl", "", "", "want unix:/path or inet:host:port"},
		{"unix:clamd.ctl", "", "", "the socket path must be absolute"},
		{"inet:127.0.0.1", "", "", "want inet:host:port"},
		{"inet::3310", "", "", "no host"},
		{"inet:127.0.0.1:clamd", "", "", `port "clamd" is not a number`},
		{"inet:127.0.0.1:70000", "", "", `port "70000" is not a number`},
		{"tcp:127.0.0.1:3310", "", "", `unknown kind "tcp"`},
		{"", "", "", "want unix:/path or inet:host:port"},
	}
	for _, tt := range tests {
		network, addr, err := ParseAddress(tt.in)
		if network != tt.network || addr != tt.addr || (err == nil) != (tt.err == "") ||
			(err != nil && !strings.Contains(err.Error(), tt.err)) {
			t.Errorf("ParseAddress(%q) = %q, %q, %v; want %q, %q, error containing %q",
				tt.in, network, addr, err, tt.network, tt.addr, tt.err)
		}
	}
}

// fakeClamd serves each connection with handle on 127.0.0.1 until the test
// ends, and returns its address. Connections still open then are closed.
func fakeClamd(t *testing.T, handle func(net.Conn)) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Go(func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, conn)
			mu.Unlock()
			wg.Go(func() {
				defer conn.Close()
				handle(conn)
			})
		}
	})
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return "inet:" + l.Addr().String()
}

// checkNoLeak fails the test if it ends with more goroutines than it
// began with. Call it first: cleanups run last in, first out.
func checkNoLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		var now int
		for range 100 {
			if now = runtime.NumGoroutine(); now <= before {
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
		buf := make([]byte, 1<<16)
		t.Errorf("%d goroutines before, %d after:\n%s", before, now, buf[:runtime.Stack(buf, true)])
	})
}

// sessionClamd is a fake clamd that keeps the connection: it answers the
// nth INSTREAM on it with reply(n), and closes it when reply says "",
// or after the answer if it ends with "|close".
func sessionClamd(t *testing.T, reply func(n int) string) string {
	return fakeClamd(t, func(conn net.Conn) {
		for n := 1; ; n++ {
			if _, _, err := readInstream(conn); err != nil {
				return
			}
			r := reply(n)
			if r == "" {
				return
			}
			r, closing := strings.CutSuffix(r, "|close")
			conn.Write([]byte(r))
			if closing {
				return
			}
		}
	})
}

func numbered(n int) string { return fmt.Sprintf("%d: stream: OK\x00", n) }

// Scans share a session while clamd answers each with its number and a
// verdict; anything else costs the session, never the next scan.
func TestScanSessions(t *testing.T) {
	tests := []struct {
		name  string
		reply func(n int) string
		want  Result // every scan's result
		dials int64  // connections for three scans
	}{
		{"reused", numbered, Clean, 1},
		// clamd closes the session while it waits: the scan finds it
		// closed, or has sent its command already and sends it again on
		// a new connection (rewinding the strings.Reader).
		{"clamd closes the idle session", func(n int) string { return numbered(n) + "|close" }, Clean, 3},
		// clamd closes it on the next command, unanswered: sent again.
		{"clamd ends the session", func(n int) string {
			if n > 1 {
				return ""
			}
			return numbered(n)
		}, Clean, 3},
		{"no number", func(int) string { return "stream: OK\x00" }, Clean, 3},
		{"infected", func(n int) string { return fmt.Sprintf("%d: stream: Eicar FOUND\x00", n) }, Infected, 1},
		{"an error", func(n int) string { return fmt.Sprintf("%d: stream: Can't allocate memory ERROR\x00", n) }, Error, 3},
		{"another number", func(n int) string { return fmt.Sprintf("%d: stream: OK\x00", n+1) }, Error, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkNoLeak(t)
			c := &Client{Address: sessionClamd(t, tt.reply)}
			defer c.Close()
			for i := range 3 {
				ev := c.Scan(t.Context(), strings.NewReader("hello"), 5)
				if ev.Result != tt.want {
					t.Errorf("scan %d = %+v, want %s", i+1, ev, tt.want)
				}
			}
			if n := c.pool.dials.Load(); n != tt.dials {
				t.Errorf("%d connections for three scans, want %d", n, tt.dials)
			}
		})
	}
}

// A session idle for longer than idleFor is closed, not used; Close
// closes the idle ones.
func TestScanSessionsExpire(t *testing.T) {
	checkNoLeak(t)
	ended := make(chan struct{}, 2)
	addr := fakeClamd(t, func(conn net.Conn) {
		defer func() { ended <- struct{}{} }()
		for n := 1; ; n++ {
			if _, _, err := readInstream(conn); err != nil {
				return
			}
			conn.Write([]byte(numbered(n)))
		}
	})
	c := &Client{Address: addr}
	scan := func() {
		t.Helper()
		if ev := c.Scan(t.Context(), strings.NewReader("hello"), 5); ev.Result != Clean {
			t.Fatalf("Scan = %+v, want Clean", ev)
		}
	}
	scan()
	c.pool.idle[0].idle = time.Now().Add(-2 * idleFor)
	scan()
	select {
	case <-ended:
	case <-time.After(5 * time.Second):
		t.Fatal("the stale session was not closed")
	}
	if n := c.pool.dials.Load(); n != 2 {
		t.Errorf("%d connections, want 2", n)
	}
	c.Close()
	select {
	case <-ended:
	case <-time.After(5 * time.Second):
		t.Fatal("Close left the idle session open")
	}
	// After Close, scans still work, each on a connection of its own.
	scan()
	if len(c.pool.idle) != 0 {
		t.Errorf("%d sessions kept after Close", len(c.pool.idle))
	}
}

// Without a reader that can rewind, a scan whose session clamd closed
// unanswered is not sent again: an error, and the next scan opens a new one.
func TestScanSessionNoRewind(t *testing.T) {
	checkNoLeak(t)
	c := &Client{Address: sessionClamd(t, func(n int) string {
		if n > 1 {
			return ""
		}
		return numbered(n)
	})}
	defer c.Close()
	once := func() io.Reader { return io.MultiReader(strings.NewReader("hello")) }
	for i, want := range []Result{Clean, Error, Clean} {
		if ev := c.Scan(t.Context(), once(), 5); ev.Result != want || (want == Error && !errors.Is(ev.Err, ErrUnreachable)) {
			t.Errorf("scan %d = %+v, want %s", i+1, ev, want)
		}
	}
}

// A scan cut off by its context does not return its session to the pool.
func TestScanSessionCancelled(t *testing.T) {
	checkNoLeak(t)
	hang := make(chan struct{})
	defer close(hang)
	addr := sessionClamd(t, func(n int) string {
		if n == 2 {
			<-hang
			return ""
		}
		return numbered(n)
	})
	c := &Client{Address: addr}
	defer c.Close()
	if ev := c.Scan(t.Context(), strings.NewReader("hello"), 5); ev.Result != Clean {
		t.Fatalf("first scan = %+v, want Clean", ev)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	if ev := c.Scan(ctx, strings.NewReader("hello"), 5); !errors.Is(ev.Err, ErrTimeout) {
		t.Fatalf("second scan = %+v, want ErrTimeout", ev)
	}
	if len(c.pool.idle) != 0 {
		t.Errorf("the timed-out session went back to the pool")
	}
}
