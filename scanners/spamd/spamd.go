// Package spamd asks SpamAssassin's spamd for its opinion of a message,
// over the SPAMC/SPAMD protocol 1.5 (SpamAssassin's spamd/PROTOCOL, the
// "SYMBOLS" command), and returns typed evidence: score, required score,
// spamd's own verdict and the rules that hit. What to do about it is
// policy's business. It imports nothing of the application.
package spamd

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
)

// ErrGarbage marks an answer that is not the protocol: the engine (or
// whatever listens at the address) said something we cannot read.
var ErrGarbage = errors.New("garbage answer")

// maxReply bounds what we read of an answer: a SYMBOLS reply is one line
// of rule names, a few kilobytes at most.
const maxReply = 64 << 10

// Client talks to one spamd. The zero MaxSize sends every message. A
// Client is safe for concurrent use; it holds no connection between checks.
type Client struct {
	Address string // "inet:127.0.0.1:783" or "unix:/path" (Postfix-style)
	MaxSize int64  // larger messages are not sent: Skipped; 0 = no limit
}

// Evidence is spamd's answer about one message.
type Evidence struct {
	Skipped  bool     // too large: not scanned (Detail "too large")
	Score    float64  // spamd's score
	Required float64  // spamd's own required score
	Spam     bool     // spamd's own opinion: Score >= Required
	Rules    []string // names of the rules that hit, as spamd lists them
	Detail   string   // one line for the log
	Err      error    // engine down, timeout (wraps context.DeadlineExceeded), garbage (wraps ErrGarbage)
}

// Check sends the message read from r, exactly size bytes long, to spamd
// and returns its verdict (a shorter r is an error; of a longer one only
// size bytes are sent). user, when not "", is sent as the User header
// (whose preferences spamd applies, if it is configured to). r is streamed,
// never held in memory, and not read after Check returns. Check gives up
// when ctx is done.
func (c *Client) Check(ctx context.Context, r io.Reader, size int64, user string) Evidence {
	if c.MaxSize > 0 && size > c.MaxSize {
		return Evidence{Skipped: true, Detail: "too large"}
	}
	ev, err := c.check(ctx, r, size, user)
	if err != nil {
		if ctx.Err() != nil {
			// The deadline cut the connection short: say so, rather
			// than the "i/o timeout" or "use of closed connection" it
			// caused.
			err = fmt.Errorf("%w (%v)", context.Cause(ctx), err)
		}
		return Evidence{Err: fmt.Errorf("spamd %s: %w", c.Address, err), Detail: "error"}
	}
	return ev
}

func (c *Client) check(ctx context.Context, r io.Reader, size int64, user string) (Evidence, error) {
	if strings.ContainsAny(user, "\r\n") {
		return Evidence{}, fmt.Errorf("user %q has a line break", user)
	}
	network, addr, err := ParseAddress(c.Address)
	if err != nil {
		return Evidence{}, err
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return Evidence{}, err
	}
	defer conn.Close()
	// When ctx ends (deadline or cancel), so do reads and writes. Not
	// conn.SetDeadline(ctx's deadline): that can fire a moment before ctx
	// says it is done, and the timeout would look like a network error.
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	w := bufio.NewWriter(conn)
	fmt.Fprintf(w, "SYMBOLS SPAMC/1.5\r\nContent-length: %d\r\n", size)
	if user != "" {
		fmt.Fprintf(w, "User: %s\r\n", user)
	}
	w.WriteString("\r\n")
	n, err := io.CopyN(w, r, size)
	if err == io.EOF {
		return Evidence{}, fmt.Errorf("message is %d bytes, not the %d announced", n, size)
	}
	if err != nil {
		return Evidence{}, err
	}
	if err := w.Flush(); err != nil {
		return Evidence{}, err
	}
	// spamd reads Content-length bytes; the half-close is for servers
	// that read to the end instead.
	if cw, ok := conn.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	return parseReply(bufio.NewReader(io.LimitReader(conn, maxReply)))
}

// parseReply reads spamd's answer to SYMBOLS:
//
//	SPAMD/1.5 0 EX_OK
//	Content-length: 32
//	Spam: True ; 1003.3 / 5.0
//
//	GTUBE,MISSING_DATE,NO_RECEIVED
//
// A non-zero code (a sysexits.h value) is an error, with its text.
func parseReply(br *bufio.Reader) (Evidence, error) {
	status, err := readLine(br)
	if err != nil {
		return Evidence{}, err
	}
	proto, rest, _ := strings.Cut(status, " ")
	codeText, msg, _ := strings.Cut(rest, " ")
	code, err := strconv.Atoi(codeText)
	if !strings.HasPrefix(proto, "SPAMD/") || err != nil {
		return Evidence{}, fmt.Errorf("%w: status line %.80q", ErrGarbage, status)
	}
	if code != 0 {
		return Evidence{}, fmt.Errorf("answered %d %s", code, msg)
	}

	var ev Evidence
	haveSpam := false
	bodyLen := int64(-1)
	for {
		line, err := readLine(br)
		if err != nil {
			return Evidence{}, err
		}
		if line == "" {
			break
		}
		name, value, ok := strings.Cut(line, ":")
		if !ok {
			return Evidence{}, fmt.Errorf("%w: header %.80q", ErrGarbage, line)
		}
		value = strings.TrimSpace(value)
		switch strings.ToLower(name) {
		case "spam":
			if ev.Spam, ev.Score, ev.Required, err = parseSpam(value); err != nil {
				return Evidence{}, err
			}
			haveSpam = true
		case "content-length":
			if bodyLen, err = strconv.ParseInt(value, 10, 64); err != nil || bodyLen < 0 {
				return Evidence{}, fmt.Errorf("%w: header %.80q", ErrGarbage, line)
			}
		}
	}
	if !haveSpam {
		return Evidence{}, fmt.Errorf("%w: no Spam header", ErrGarbage)
	}

	var body []byte
	if bodyLen >= 0 {
		body = make([]byte, min(bodyLen, maxReply))
		if _, err := io.ReadFull(br, body); err != nil {
			return Evidence{}, fmt.Errorf("%w: body shorter than its Content-length (%v)", ErrGarbage, err)
		}
	} else if body, err = io.ReadAll(br); err != nil {
		return Evidence{}, err
	}
	for _, name := range strings.Split(string(body), ",") {
		if name = strings.TrimSpace(name); name != "" {
			ev.Rules = append(ev.Rules, name)
		}
	}
	verdict := "ham"
	if ev.Spam {
		verdict = "spam"
	}
	ev.Detail = fmt.Sprintf("%s, score %.1f/%.1f", verdict, ev.Score, ev.Required)
	return ev, nil
}

// parseSpam parses the Spam header's value, "True ; 1003.3 / 5.0".
func parseSpam(v string) (spam bool, score, required float64, err error) {
	flag, scores, ok1 := strings.Cut(v, ";")
	s, req, ok2 := strings.Cut(scores, "/")
	var err1, err2 error
	score, err1 = strconv.ParseFloat(strings.TrimSpace(s), 64)
	required, err2 = strconv.ParseFloat(strings.TrimSpace(req), 64)
	switch strings.ToLower(strings.TrimSpace(flag)) {
	case "true", "yes":
		spam = true
	case "false", "no":
	default:
		ok1 = false
	}
	if !ok1 || !ok2 || err1 != nil || err2 != nil {
		return false, 0, 0, fmt.Errorf("%w: Spam header %.80q", ErrGarbage, v)
	}
	return spam, score, required, nil
}

// readLine reads one CRLF- (or LF-) terminated line without its end. A
// connection closed before the line ends is garbage, not a clean EOF.
func readLine(br *bufio.Reader) (string, error) {
	line, err := br.ReadString('\n')
	if err == io.EOF {
		return "", fmt.Errorf("%w: answer ends early after %.80q", ErrGarbage, line)
	}
	if err != nil {
		return "", err
	}
	return strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r"), nil
}

// ParseAddress splits a Postfix-style address, "inet:HOST:PORT" or
// "unix:/path", into a network and an address for net.Dial. IPv6 hosts are
// bracketed: "inet:[::1]:783".
func ParseAddress(s string) (network, addr string, err error) {
	kind, rest, _ := strings.Cut(s, ":")
	switch kind {
	case "inet":
		host, port, err := net.SplitHostPort(rest)
		if err != nil {
			return "", "", fmt.Errorf("address %q: %v", s, err)
		}
		if p, err := strconv.ParseUint(port, 10, 16); host == "" || err != nil || p == 0 {
			return "", "", fmt.Errorf("address %q: want inet:HOST:PORT", s)
		}
		return "tcp", rest, nil
	case "unix":
		if rest == "" {
			return "", "", fmt.Errorf("address %q: want unix:/path", s)
		}
		return "unix", rest, nil
	}
	return "", "", fmt.Errorf("address %q: want inet:HOST:PORT or unix:/path", s)
}
