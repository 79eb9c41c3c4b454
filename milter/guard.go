package milter

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
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
	through int    // bytes of the current frame that go-milter reads straight from the socket
	err     error  // sticky: once a frame is bad, the connection is done

	// in holds bytes read from the socket: in[start:end] are not yet
	// framed. Small frames (commands, macros, header fields) are handed
	// out from it. Larger ones, body chunks, are not copied: go-milter
	// reads them from the socket into its own buffer.
	in         []byte
	start, end int

	hdr  [5]byte // a frame header go-milter wrote, sent with its payload
	held bool
	mods []byte // modifications waiting for the final reply

	acking bool // quick ACKs are on: set since our last write
}

// inSize is the read buffer each connection keeps.
const inSize = 4096

func (g *frameGuard) Read(p []byte) (int, error) {
	if len(g.pending) == 0 && g.err != nil {
		return 0, g.err
	}
	if len(g.pending) == 0 && g.through > 0 {
		n, err := g.readSocket(p[:min(len(p), g.through)])
		g.through -= n
		if err == io.EOF && g.through > 0 {
			err = io.ErrUnexpectedEOF
		}
		g.err = err
		return n, err
	}
	if len(g.pending) == 0 {
		frame, err := g.readFrame()
		if err != nil {
			g.err = err // sticky: the connection is done
			return 0, err
		}
		g.pending = frame
	}
	n := copy(p, g.pending)
	g.pending = g.pending[n:]
	return n, nil
}

// readFrame returns the next frame, or as much of it as is buffered; the
// rest of a long one (g.through) is left on the socket.
func (g *frameGuard) readFrame() ([]byte, error) {
	if err := g.fill(4); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(g.in[g.start:])
	if n == 0 || n > MaxFrame {
		return nil, g.reject(fmt.Errorf("frame length %d outside 1..%d", n, MaxFrame))
	}
	if err := g.fill(5); err != nil { // the command
		return nil, err
	}
	size, cmd := 4+int(n), g.in[g.start+4]
	var frame []byte
	switch {
	case size <= inSize:
		if err := g.fill(size); err != nil {
			return nil, err
		}
		frame = g.in[g.start : g.start+size]
		g.start += size
	case !checked(cmd):
		// A body chunk: nothing in it to check, so go-milter reads what
		// is not buffered yet straight from the socket.
		have := min(size, g.end-g.start)
		frame = g.in[g.start : g.start+have]
		g.start += have
		g.through = size - have
		return frame, nil
	default:
		// A long CONNECT, MAIL or RCPT: rare, and checked whole.
		frame = make([]byte, size)
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
// Only readFrame calls it, when nothing of a frame is pending, so moving
// the unframed bytes to the front moves nothing go-milter still reads.
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
		m, err := g.readSocket(g.in[g.end:])
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

func (g *frameGuard) readSocket(p []byte) (int, error) {
	// Sending a reply puts the kernel back into delayed-ACK mode (Linux's
	// "pingpong"); receiving does not. So quick ACKs need setting again
	// only after a write, not before every read.
	if !g.acking {
		quickAck(g.Conn)
		g.acking = true
	}
	return g.Conn.Read(p)
}

// Write sends what go-milter writes. wire.WritePacket writes a frame as its
// 5-byte header (length, code) and then its payload; a header announcing a
// payload is held and sent with it, in one system call. Modifications
// (header edits and the like, only sent at end of message) are held too,
// and go out with the final reply that always follows them. go-milter
// reads and writes a connection from one goroutine, so none of this state
// needs a lock.
func (g *frameGuard) Write(p []byte) (int, error) {
	g.acking = false
	if g.held {
		g.held = false
		if modification(g.hdr[4]) && len(g.mods)+len(g.hdr)+len(p) <= maxHeldMods {
			g.mods = append(append(g.mods, g.hdr[:]...), p...)
			return len(p), nil
		}
		if err := g.send(g.hdr[:], p); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	if len(p) == len(g.hdr) && binary.BigEndian.Uint32(p) > 1 {
		copy(g.hdr[:], p)
		g.held = true
		return len(p), nil
	}
	if err := g.send(p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// send writes the held modifications, then bufs, in one system call.
func (g *frameGuard) send(bufs ...[]byte) error {
	out := make(net.Buffers, 0, 3)
	if len(g.mods) > 0 {
		out = append(out, g.mods)
	}
	out = append(out, bufs...)
	_, err := out.WriteTo(g.Conn)
	g.mods = g.mods[:0]
	return err
}

// maxHeldMods bounds the modifications held for the final reply; beyond
// it (a replaced body, say) they go out as they come.
const maxHeldMods = 16 << 10

// modification reports whether a reply code is one of the modifications
// a milter may send at end of message, before its final reply.
func modification(code byte) bool {
	switch code {
	case '+', '-', '2', 'b', 'e', 'h', 'i', 'm', 'q':
		return true
	}
	return false
}

func (g *frameGuard) reject(err error) error {
	err = fmt.Errorf("milter: bad frame from %s: %w", g.RemoteAddr(), err)
	g.log.Warn("closing milter connection", "err", err)
	return err
}

// checked reports whether validFrame looks into frames of command cmd.
func checked(cmd byte) bool { return cmd == 'C' || cmd == 'M' || cmd == 'R' }

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
