package milter

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
)

// MaxFrame is the largest milter frame mxguard accepts: a 1 MiB body chunk
// (the largest the protocol negotiates) plus room for its command byte.
// go-milter itself accepts frames of up to 512 MiB.
const MaxFrame = 1<<20 + 1<<16

// guardListener wraps every accepted connection in a frameGuard.
type guardListener struct {
	net.Listener
	log *slog.Logger
}

func (l guardListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &frameGuard{Conn: c, log: l.log}, nil
}

// frameGuard validates each milter frame before go-milter reads it.
// go-milter v0.10.2 panics, taking the whole process down, on frames a
// broken or hostile peer can send: a length of 0 (it indexes data[0]), and
// CONNECT, MAIL or RCPT payloads without the NUL their strings end with (it
// slices past the end). A frame that fails validation closes that connection
// only, with a log line saying why.
type frameGuard struct {
	net.Conn
	log     *slog.Logger
	pending []byte // validated bytes not yet handed to go-milter
	err     error  // sticky: once a frame is bad, the connection is done
	small   []byte // this connection's buffer for small frames (commands, macros, headers)
	large   []byte // a pooled buffer holding the pending body chunk, if any
}

// smallFrame is the size of the buffer each connection keeps; larger
// frames (body chunks, up to 65,535 bytes from Postfix) borrow a pooled
// buffer only while go-milter reads them, so a session waiting in DATA
// holds no 64 KiB buffer of ours.
const smallFrame = 4 + 4096

var framePool = sync.Pool{New: func() any { return make([]byte, 0, 4+65535+64) }}

func (g *frameGuard) Read(p []byte) (int, error) {
	if len(g.pending) == 0 {
		if g.err != nil {
			return 0, g.err
		}
		frame, err := g.readFrame()
		if err != nil {
			g.err = err // sticky: the connection is done
			g.giveBack()
			return 0, err
		}
		g.pending = frame
	}
	n := copy(p, g.pending)
	g.pending = g.pending[n:]
	if len(g.pending) == 0 {
		g.giveBack() // go-milter has copied the frame out
	}
	return n, nil
}

// giveBack returns a borrowed large buffer to the pool. Only the goroutine
// that reads the connection calls it, once nothing points into the buffer.
func (g *frameGuard) giveBack() {
	if g.large != nil {
		framePool.Put(g.large[:0])
		g.large = nil
	}
}

func (g *frameGuard) readFrame() ([]byte, error) {
	quickAck(g.Conn)
	var hdr [4]byte
	if _, err := io.ReadFull(g.Conn, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n == 0 || n > MaxFrame {
		return nil, g.reject(fmt.Errorf("frame length %d outside 1..%d", n, MaxFrame))
	}
	// A frame is handed out whole before the next is read, so one buffer
	// serves them all.
	var frame []byte
	switch size := int(4 + n); {
	case size <= smallFrame:
		if g.small == nil {
			g.small = make([]byte, smallFrame)
		}
		frame = g.small[:size]
	default:
		g.large = framePool.Get().([]byte)
		if size <= cap(g.large) {
			frame = g.large[:size]
		} else {
			frame = make([]byte, size) // beyond Postfix's chunks: rare
		}
	}
	copy(frame, hdr[:])
	if _, err := io.ReadFull(g.Conn, frame[4:]); err != nil {
		return nil, err
	}
	if err := validFrame(frame[4], frame[5:]); err != nil {
		return nil, g.reject(err)
	}
	return frame, nil
}

func (g *frameGuard) reject(err error) error {
	err = fmt.Errorf("milter: bad frame from %s: %w", g.RemoteAddr(), err)
	g.log.Warn("closing milter connection", "err", err)
	return err
}

// validFrame checks the payload shapes go-milter relies on without checking.
func validFrame(cmd byte, data []byte) error {
	switch cmd {
	case 'C': // SMFIC_CONNECT: hostname NUL, family byte, ...
		if i := bytes.IndexByte(data, 0); i < 0 || i+1 >= len(data) {
			return fmt.Errorf("CONNECT without a NUL-terminated host name and family")
		}
	case 'M', 'R': // SMFIC_MAIL, SMFIC_RCPT: address NUL, args...
		if bytes.IndexByte(data, 0) < 0 {
			return fmt.Errorf("%c command without a NUL-terminated address", cmd)
		}
	}
	return nil
}
