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

// frameGuard sits between the socket and go-milter. It validates each
// milter frame before go-milter reads it: go-milter v0.10.2 panics, taking
// the whole process down, on frames a broken or hostile peer can send — a
// length of 0 (it indexes data[0]), and CONNECT, MAIL or RCPT payloads
// without the NUL their strings end with (it slices past the end). A frame
// that fails validation closes that connection only, with a log line
// saying why.
//
// It also saves system calls, which are most of the protocol's cost:
// go-milter reads a frame in two reads and writes one in two writes. The
// guard reads whatever the MTA has sent into one buffer (an MTA sends the
// frames that need no reply — HELO, DATA, header fields, body chunks —
// back to back), and sends each frame go-milter writes in one write.
type frameGuard struct {
	net.Conn
	log     *slog.Logger
	pending []byte // validated bytes not yet handed to go-milter
	err     error  // sticky: once a frame is bad, the connection is done

	// in holds bytes read from the socket: in[start:end] are not yet
	// framed. Small frames (commands, macros, header fields) are handed
	// out from it; larger ones (body chunks) borrow a pooled buffer only
	// while go-milter reads them, so a session waiting in DATA holds no
	// 64 KiB buffer of ours.
	in         []byte
	start, end int
	large      []byte

	hdr  [5]byte // a frame header go-milter wrote, sent with its payload
	held bool

	acking bool // quick ACKs are on: set since our last write
}

// inSize is the read buffer each connection keeps.
const inSize = 4096

var framePool = sync.Pool{New: func() any { return make([]byte, 0, 4+65535+64) }}

func (g *frameGuard) Read(p []byte) (int, error) {
	if len(g.pending) == 0 {
		if g.err != nil {
			return 0, g.err
		}
		g.giveBack() // go-milter has copied the last frame out
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
	if err := g.fill(4); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(g.in[g.start:])
	if n == 0 || n > MaxFrame {
		return nil, g.reject(fmt.Errorf("frame length %d outside 1..%d", n, MaxFrame))
	}
	size := 4 + int(n)
	var frame []byte
	if size <= inSize {
		if err := g.fill(size); err != nil {
			return nil, err
		}
		frame = g.in[g.start : g.start+size]
		g.start += size
	} else {
		g.large = framePool.Get().([]byte)
		if size <= cap(g.large) {
			frame = g.large[:size]
		} else {
			frame = make([]byte, size) // beyond Postfix's chunks: rare
		}
		have := copy(frame, g.in[g.start:g.end])
		g.start += have
		if _, err := io.ReadFull(g.Conn, frame[have:]); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF // the length is read: the frame was cut short
			}
			return nil, err
		}
	}
	if err := validFrame(frame[4], frame[5:]); err != nil {
		return nil, g.reject(err)
	}
	return frame, nil
}

// fill reads from the socket until at least n unframed bytes are buffered.
// Only readFrame calls it, when no frame is pending, so moving the
// unframed bytes to the front moves nothing go-milter still reads.
func (g *frameGuard) fill(n int) error {
	if g.end-g.start >= n {
		return nil
	}
	if g.in == nil {
		g.in = make([]byte, inSize)
	}
	if g.start > 0 {
		g.end = copy(g.in, g.in[g.start:g.end])
		g.start = 0
	}
	for g.end < n {
		// Sending a reply puts the kernel back into delayed-ACK mode
		// (Linux's "pingpong"); receiving does not. So quick ACKs need
		// setting again only after a write, not before every read.
		if !g.acking {
			quickAck(g.Conn)
			g.acking = true
		}
		m, err := g.Conn.Read(g.in[g.end:])
		g.end += m
		if g.end >= n {
			break
		}
		if err == io.EOF && g.end > 0 {
			err = io.ErrUnexpectedEOF
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// Write sends what go-milter writes. wire.WritePacket writes a frame as its
// 5-byte header (length, code) and then its payload; a header announcing a
// payload is held and sent with it, in one system call.
func (g *frameGuard) Write(p []byte) (int, error) {
	g.acking = false
	if g.held {
		g.held = false
		bufs := net.Buffers{g.hdr[:], p}
		if _, err := bufs.WriteTo(g.Conn); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	if len(p) == len(g.hdr) && binary.BigEndian.Uint32(p) > 1 {
		copy(g.hdr[:], p)
		g.held = true
		return len(p), nil
	}
	return g.Conn.Write(p)
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
