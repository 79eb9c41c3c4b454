// Package rspamd asks rspamd for its opinion of a message through its
// normal worker's HTTP protocol (POST /checkv2, https://rspamd.com/doc/developers/protocol.html)
// and returns typed evidence: score, required score, rspamd's own action
// and the symbols that hit. What to do about it is policy's business. It
// imports nothing of the application.
package rspamd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
)

// ErrGarbage marks an answer that is not rspamd's JSON: the engine (or
// whatever listens at the URL) said something we cannot read.
var ErrGarbage = errors.New("garbage answer")

// maxReply bounds what we read of an answer. A reply lists every symbol
// with its options; a few hundred kilobytes is already a lot.
const maxReply = 4 << 20

// defaultHTTP is used when Client.HTTP is nil. It has no overall timeout
// (the caller's ctx decides) and ignores HTTP_PROXY: rspamd is local.
var defaultHTTP = &http.Client{Transport: func() http.RoundTripper {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.Proxy = nil
	return t
}()}

// Client talks to one rspamd normal worker (or proxy). A Client is safe
// for concurrent use.
type Client struct {
	URL      string       // "http://127.0.0.1:11333"
	MaxSize  int64        // larger messages are not sent: Skipped; 0 = no limit
	Password string       // optional, sent as the Password header
	HTTP     *http.Client // nil: one without a global timeout (ctx governs)
}

// Envelope is what the MTA knows about the message beyond its text; each
// field that is not empty becomes the request header of the same meaning.
type Envelope struct {
	IP       string   // client IP address (IP)
	Helo     string   // HELO/EHLO name (Helo)
	Hostname string   // client's reverse DNS name (Hostname)
	From     string   // envelope sender (From)
	User     string   // SASL authenticated user (User)
	QueueID  string   // MTA's queue id, for rspamd's log (Queue-Id)
	Rcpts    []string // envelope recipients, one Rcpt header each
}

// Evidence is rspamd's answer about one message.
type Evidence struct {
	Skipped  bool     // too large: not scanned (Detail "too large")
	Score    float64  // rspamd's score
	Required float64  // required_score: where rspamd's reject starts
	Action   string   // rspamd's own: "no action", "greylist", "add header", "rewrite subject", "soft reject", "reject"
	Symbols  []string // names of the symbols that hit, sorted
	Detail   string   // one line for the log
	Err      error    // engine down, HTTP error, timeout (wraps context.DeadlineExceeded), garbage (wraps ErrGarbage)
}

// reply is the part of /checkv2's JSON answer we use.
type reply struct {
	Score    *float64                   `json:"score"`
	Required float64                    `json:"required_score"`
	Action   string                     `json:"action"`
	Symbols  map[string]json.RawMessage `json:"symbols"`
}

// Check sends the message read from r, exactly size bytes long, with its
// envelope to rspamd and returns its verdict (a shorter r is an error; of
// a longer one only size bytes are sent). r is streamed, never held in
// memory, and not read after Check returns (Check waits for a Read in
// progress). Check gives up when ctx is done.
func (c *Client) Check(ctx context.Context, r io.Reader, size int64, env Envelope) Evidence {
	if c.MaxSize > 0 && size > c.MaxSize {
		return Evidence{Skipped: true, Detail: "too large"}
	}
	ev, err := c.check(ctx, r, size, env)
	if err != nil {
		return Evidence{Err: fmt.Errorf("rspamd %s: %w", c.URL, err), Detail: "error"}
	}
	return ev
}

func (c *Client) check(ctx context.Context, r io.Reader, size int64, env Envelope) (Evidence, error) {
	// Exactly size bytes: what the transport would do with more depends
	// on whether rspamd answers before it finds out.
	body := &guardedReader{r: io.LimitReader(r, size)}
	// The transport may still read the body in its own goroutine after
	// Do returns (say, when rspamd answers before reading it all); r is
	// the caller's again once Check returns.
	defer body.Close()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(c.URL, "/")+"/checkv2", body)
	if err != nil {
		return Evidence{}, err
	}
	req.ContentLength = size
	if size == 0 {
		req.Body = http.NoBody
	}
	set := func(name, value string) {
		if value != "" {
			req.Header.Add(name, value)
		}
	}
	set("Password", c.Password)
	set("IP", env.IP)
	set("Helo", env.Helo)
	set("Hostname", env.Hostname)
	set("From", env.From)
	set("User", env.User)
	set("Queue-Id", env.QueueID)
	for _, rcpt := range env.Rcpts {
		set("Rcpt", rcpt)
	}

	hc := c.HTTP
	if hc == nil {
		hc = defaultHTTP
	}
	resp, err := hc.Do(req)
	if ue := (*url.Error)(nil); errors.As(err, &ue) {
		err = ue.Err // not "Post URL: ...": Check names the URL already
	}
	if err != nil {
		return Evidence{}, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxReply))
	if err != nil {
		return Evidence{}, err
	}
	if resp.StatusCode != http.StatusOK {
		return Evidence{}, fmt.Errorf("HTTP %s: %.200s", resp.Status, strings.TrimSpace(string(data)))
	}
	return parseReply(data)
}

// parseReply reads /checkv2's JSON answer. Score and action must be there;
// anything else, such as an {"error": ...} object, is garbage.
func parseReply(data []byte) (Evidence, error) {
	var rep reply
	if err := json.Unmarshal(data, &rep); err != nil {
		return Evidence{}, fmt.Errorf("%w: %v", ErrGarbage, err)
	}
	if rep.Score == nil || rep.Action == "" {
		return Evidence{}, fmt.Errorf("%w: no score or action in %.200q", ErrGarbage, data)
	}
	ev := Evidence{Score: *rep.Score, Required: rep.Required, Action: rep.Action}
	for name := range rep.Symbols {
		ev.Symbols = append(ev.Symbols, name)
	}
	slices.Sort(ev.Symbols)
	ev.Detail = fmt.Sprintf("%s, score %.2f/%.2f", ev.Action, ev.Score, ev.Required)
	return ev, nil
}

// guardedReader reads from r until it is closed, and never after: Close
// waits for a Read in progress.
type guardedReader struct {
	mu     sync.Mutex
	r      io.Reader
	closed bool
}

func (g *guardedReader) Read(p []byte) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return 0, errors.New("rspamd: message read after the check ended")
	}
	return g.r.Read(p)
}

func (g *guardedReader) Close() error {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
	return nil
}
