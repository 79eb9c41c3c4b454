package milter

import (
	"bytes"
	"encoding/binary"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"strings"
	"testing"
	"time"
)

// guardedPipe returns the MTA's end of a connection and a frameGuard on
// mxguard's end; both are closed when the test ends.
func guardedPipe(t *testing.T) (mta net.Conn, g *frameGuard) {
	mta, ours := net.Pipe()
	t.Cleanup(func() { mta.Close(); ours.Close() })
	return mta, &frameGuard{Conn: ours, log: slog.New(slog.DiscardHandler)}
}

// frame builds a milter frame: length, command, payload.
func frame(cmd byte, payload []byte) []byte {
	f := binary.BigEndian.AppendUint32(nil, uint32(1+len(payload)))
	return append(append(f, cmd), payload...)
}

// TestGuardReadsFramesHoweverTheyArrive sends frames of every size class —
// smaller than the read buffer, straddling it, body chunks larger than it —
// in pieces cut at random places, and reads them back through the guard
// the way go-milter does (4-byte length, then the rest).
func TestGuardReadsFramesHoweverTheyArrive(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var want [][]byte
	var stream []byte
	// Long body chunks are read straight from the socket; a long MAIL is
	// read whole, to be checked.
	for _, size := range []int{1, 2, 100, inSize - 5, inSize - 4, inSize - 3, inSize, inSize + 1, 65535, 7, 65535, 3, 2*inSize + 17, -2*inSize - 17, 1} {
		cmd := byte('B')
		if size < 0 {
			cmd, size = 'M', -size
		}
		payload := make([]byte, size-1)
		for i := range payload {
			payload[i] = byte('a' + rng.IntN(26))
		}
		if cmd == 'M' {
			payload[len(payload)-1] = 0 // the address ends with a NUL
		}
		f := frame(cmd, payload)
		want = append(want, f)
		stream = append(stream, f...)
	}
	for _, maxPiece := range []int{1, 3, 100, inSize, 70000, len(stream)} {
		mta, g := guardedPipe(t)
		go func() {
			defer mta.Close()
			for rest := stream; len(rest) > 0; {
				n := min(1+rng.IntN(maxPiece), len(rest))
				if _, err := mta.Write(rest[:n]); err != nil {
					return
				}
				rest = rest[n:]
			}
		}()
		for i, w := range want {
			var length uint32
			if err := binary.Read(g, binary.BigEndian, &length); err != nil {
				t.Fatalf("pieces up to %d: frame %d: reading the length: %v", maxPiece, i, err)
			}
			got := make([]byte, length)
			if _, err := io.ReadFull(g, got); err != nil {
				t.Fatalf("pieces up to %d: frame %d: reading %d bytes: %v", maxPiece, i, length, err)
			}
			if !bytes.Equal(append(binary.BigEndian.AppendUint32(nil, length), got...), w) {
				t.Fatalf("pieces up to %d: frame %d (%d bytes) differs from what was sent", maxPiece, i, len(w))
			}
		}
		if _, err := g.Read(make([]byte, 4)); err != io.EOF {
			t.Fatalf("pieces up to %d: after the last frame: %v, want EOF", maxPiece, err)
		}
		if g.through != 0 || len(g.pending) != 0 {
			t.Errorf("pieces up to %d: %d bytes pending, %d to read through after the end", maxPiece, len(g.pending), g.through)
		}
		g.Close()
	}
}

// TestGuardEndsInsideAFrame: a peer that hangs up in the middle of a frame
// is an unexpected EOF, not a clean end.
func TestGuardEndsInsideAFrame(t *testing.T) {
	for _, cut := range []int{2, 6, inSize + 100} {
		mta, g := guardedPipe(t)
		f := frame('B', make([]byte, inSize+200))
		go func() {
			mta.Write(f[:cut])
			mta.Close()
		}()
		_, err := io.ReadFull(g, make([]byte, len(f)))
		if err != io.ErrUnexpectedEOF {
			t.Errorf("hang-up after %d bytes: %v, want unexpected EOF", cut, err)
		}
		g.Close()
	}
}

// TestGuardWritesWholeFrames: go-milter writes a frame as its header and
// then its payload. The guard holds a header that announces a payload and
// sends it with the payload; a frame without payload goes out at once.
func TestGuardWritesWholeFrames(t *testing.T) {
	mta, g := guardedPipe(t)
	got := make(chan []byte, 16)
	go func() {
		buf := make([]byte, 64)
		for {
			mta.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, err := mta.Read(buf)
			if err != nil {
				close(got)
				return
			}
			got <- append([]byte(nil), buf[:n]...)
		}
	}()
	read := func(n int) []byte {
		var b []byte
		for len(b) < n {
			p, ok := <-got
			if !ok {
				t.Fatalf("connection closed after %q, want %d bytes", b, n)
			}
			b = append(b, p...)
		}
		return b
	}

	// Continue: no payload, so nothing to wait for.
	cont := frame('c', nil)
	if n, err := g.Write(cont); n != len(cont) || err != nil {
		t.Fatalf("Write(continue) = %d, %v", n, err)
	}
	if b := read(len(cont)); !bytes.Equal(b, cont) {
		t.Fatalf("continue arrived as %q", b)
	}

	nothing := func(what string) {
		t.Helper()
		select {
		case b := <-got:
			t.Fatalf("%s went out: %q", what, b)
		case <-time.After(50 * time.Millisecond):
		}
	}
	write := func(p []byte) {
		t.Helper()
		if n, err := g.Write(p); n != len(p) || err != nil {
			t.Fatalf("Write(%q) = %d, %v", p, n, err)
		}
	}

	// A reply with text: its header is held until the payload comes.
	reply := frame('y', []byte("451 4.3.0 try later\x00"))
	write(reply[:5])
	nothing("a header alone")
	write(reply[5:])
	if b := read(len(reply)); !bytes.Equal(b, reply) {
		t.Fatalf("the reply arrived as %q, want %q", b, reply)
	}

	// Header edits at end of message wait for the final reply.
	ins := frame('i', []byte("\x00\x00\x00\x00X-Test\x00yes\x00"))
	chg := frame('m', []byte("\x00\x00\x00\x01Subject\x00\x00"))
	for _, f := range [][]byte{ins, chg} {
		write(f[:5])
		write(f[5:])
	}
	nothing("a modification before the final reply")
	accept := frame('a', nil)
	write(accept)
	want := append(append(append([]byte(nil), ins...), chg...), accept...)
	if b := read(len(want)); !bytes.Equal(b, want) {
		t.Fatalf("the edits and the reply arrived as %q, want %q", b, want)
	}
}

// TestGuardChecksLongFrames: a MAIL longer than the read buffer is still
// read whole and checked; one without its NUL closes the connection.
func TestGuardChecksLongFrames(t *testing.T) {
	mta, g := guardedPipe(t)
	go func() {
		mta.Write(frame('M', bytes.Repeat([]byte("a"), 2*inSize)))
		mta.Close()
	}()
	_, err := io.ReadFull(g, make([]byte, 5))
	if err == nil || !strings.Contains(err.Error(), "without a NUL-terminated address") {
		t.Fatalf("a long MAIL without NUL: %v, want it refused", err)
	}
	if _, again := g.Read(make([]byte, 1)); again != err {
		t.Errorf("after the bad frame: %v, want the same error again", again)
	}
}
