package milter

import (
	"bytes"
	"encoding/binary"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"testing"
	"time"
)

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
	for _, size := range []int{1, 2, 100, inSize - 5, inSize - 4, inSize - 3, inSize, inSize + 1, 65535, 7, 65535, 3, 2*inSize + 17, 1} {
		payload := make([]byte, size-1)
		for i := range payload {
			payload[i] = byte('a' + rng.IntN(26))
		}
		f := frame('B', payload)
		want = append(want, f)
		stream = append(stream, f...)
	}
	for _, maxPiece := range []int{1, 3, 100, inSize, 70000, len(stream)} {
		mta, ours := net.Pipe()
		g := &frameGuard{Conn: ours, log: slog.New(slog.DiscardHandler)}
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
		if g.large != nil {
			t.Errorf("pieces up to %d: a pooled buffer is still held", maxPiece)
		}
		ours.Close()
	}
}

// TestGuardEndsInsideAFrame: a peer that hangs up in the middle of a frame
// is an unexpected EOF, not a clean end.
func TestGuardEndsInsideAFrame(t *testing.T) {
	for _, cut := range []int{2, 6, inSize + 100} {
		mta, ours := net.Pipe()
		g := &frameGuard{Conn: ours, log: slog.New(slog.DiscardHandler)}
		f := frame('B', make([]byte, inSize+200))
		go func() {
			mta.Write(f[:cut])
			mta.Close()
		}()
		_, err := io.ReadFull(g, make([]byte, len(f)))
		if err != io.ErrUnexpectedEOF {
			t.Errorf("hang-up after %d bytes: %v, want unexpected EOF", cut, err)
		}
		ours.Close()
	}
}

// TestGuardWritesWholeFrames: go-milter writes a frame as its header and
// then its payload. The guard holds a header that announces a payload and
// sends it with the payload; a frame without payload goes out at once.
func TestGuardWritesWholeFrames(t *testing.T) {
	mta, ours := net.Pipe()
	defer mta.Close()
	g := &frameGuard{Conn: ours, log: slog.New(slog.DiscardHandler)}
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

	// A header insertion: the header is held until its payload comes.
	ins := frame('i', []byte("\x00\x00\x00\x00X-Test\x00yes\x00"))
	if n, err := g.Write(ins[:5]); n != 5 || err != nil {
		t.Fatalf("Write(header) = %d, %v", n, err)
	}
	select {
	case b := <-got:
		t.Fatalf("the header went out alone: %q", b)
	case <-time.After(50 * time.Millisecond):
	}
	if n, err := g.Write(ins[5:]); n != len(ins)-5 || err != nil {
		t.Fatalf("Write(payload) = %d, %v", n, err)
	}
	if b := read(len(ins)); !bytes.Equal(b, ins) {
		t.Fatalf("the insertion arrived as %q, want %q", b, ins)
	}
	ours.Close()
}
