package clamd

// Sessions. A connection per scan costs a connect and a close, an accept
// in clamd and, on TCP, a socket left in TIME_WAIT for a minute; at 64
// concurrent scans connecting was 7% of mxguard's CPU. So a scan runs in a
// clamd session instead: the connection starts with zIDSESSION, after
// which clamd takes one command after another on it and numbers its answers ("1: stream: OK", "2: stream: OK", ...). When a
// scan ends with a verdict, its session waits in the Client's pool for the
// next scan.
//
// One command at a time, never pipelined: clamd(8) requires a client to
// read every answer before it sends more, which alternating send and read
// does. clamd closes a session left without a command too long, or one
// whose command failed; a pooled session is therefore dropped after
// idleFor, and checked before use: one that clamd closed shows
// end-of-file, and the scan opens a new session instead.

import (
	"bufio"
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

const (
	// maxIdle sessions at most wait in a pool; more concurrent scans than
	// that close their sessions when they end.
	maxIdle = 64
	// idleFor is how long a session may wait in the pool: well under the
	// time clamd waits for a session's next command (ReadTimeout, 120 s
	// by default), so that clamd seldom closes one just as it is taken.
	// Under load sessions are reused within milliseconds.
	idleFor = 4 * time.Second
)

// session is one connection to clamd.
type session struct {
	conn net.Conn
	r    *bufio.Reader // its answers
	sent int           // commands sent on it: the number of the last answer
	idle time.Time     // when it went back to the pool
}

// pool holds a Client's idle sessions, the last returned on top.
type pool struct {
	mu     sync.Mutex
	idle   []*session
	closed bool
	dials  atomic.Int64 // connections opened, for tests
}

// session returns an idle session from the pool, or a new connection to
// clamd (whose first command will open the session).
func (c *Client) session(ctx context.Context) (*session, error) {
	for {
		s := c.pool.get()
		if s == nil {
			break
		}
		if open(s.conn) {
			return s, nil
		}
		s.conn.Close()
	}
	conn, err := c.dial(ctx)
	if err != nil {
		return nil, err
	}
	return &session{conn: conn}, nil
}

// get takes the session on top of the pool, closing the ones that waited
// longer than idleFor; nil if none is left.
func (p *pool) get() *session {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	stale := 0 // the oldest are at the bottom
	for stale < len(p.idle) && now.Sub(p.idle[stale].idle) > idleFor {
		p.idle[stale].conn.Close()
		stale++
	}
	if stale > 0 {
		n := copy(p.idle, p.idle[stale:])
		clear(p.idle[n:])
		p.idle = p.idle[:n]
	}
	if len(p.idle) == 0 {
		return nil
	}
	s := p.idle[len(p.idle)-1]
	p.idle[len(p.idle)-1] = nil
	p.idle = p.idle[:len(p.idle)-1]
	return s
}

// put returns s to the pool, or closes it if the pool is full or closed.
func (p *pool) put(s *session) {
	s.idle = time.Now()
	p.mu.Lock()
	if p.closed || len(p.idle) >= maxIdle {
		p.mu.Unlock()
		s.conn.Close()
		return
	}
	p.idle = append(p.idle, s)
	p.mu.Unlock()
}

// Close closes the idle sessions; scans still running close theirs when
// they end. The Client can still scan after Close, on new connections,
// which it then closes after each scan.
func (c *Client) Close() error {
	c.pool.mu.Lock()
	idle := c.pool.idle
	c.pool.idle, c.pool.closed = nil, true
	c.pool.mu.Unlock()
	for _, s := range idle {
		s.conn.Close()
	}
	return nil
}

// bind ties s's connection to ctx for one command: ctx's deadline, and,
// should ctx end early, a deadline in the past that unblocks the reads
// and writes in progress (in a short-lived goroutine of its own, only
// then). done releases both, and reports whether the connection is still
// fit for another command: false once ctx's end has cut it.
func (s *session) bind(ctx context.Context) (done func() bool) {
	deadline, _ := ctx.Deadline()
	s.conn.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { s.conn.SetDeadline(time.Unix(1, 0)) })
	return func() bool {
		if !stop() {
			return false
		}
		return s.conn.SetDeadline(time.Time{}) == nil
	}
}

// unnumber strips the number clamd puts before its answer in a session
// and returns it, or -1 for an answer without one (clamd's answer to a
// command it could not parse, or a server that has no sessions), which is
// returned whole.
func unnumber(reply string) (string, int) {
	num, rest, ok := strings.Cut(reply, ": ")
	if !ok {
		return reply, -1
	}
	n, err := strconv.Atoi(num)
	if err != nil || n < 0 {
		return reply, -1
	}
	return rest, n
}

// open reports whether clamd has left conn open and quiet, as an idle
// session should be: a peek that would block. A closed connection reads
// end-of-file or an error; anything else clamd sent is out of turn.
func open(conn net.Conn) bool {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	var b [1]byte
	var perr error
	err = rc.Read(func(fd uintptr) bool {
		_, _, perr = syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		return true // never wait for readiness: one look
	})
	return err == nil && errors.Is(perr, syscall.EAGAIN)
}
