package milter

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/d--j/go-milter"

	"github.com/mxguard/mxguard/internal/syncbuf"
	"github.com/mxguard/mxguard/logstore"
	"github.com/mxguard/mxguard/policy"
	"github.com/mxguard/mxguard/scanners/resolver"
	"github.com/mxguard/mxguard/scanners/spf"
)

// faultyStore is a Store whose Save fails or panics on demand.
type faultyStore struct {
	mu     sync.Mutex
	fail   error
	panics bool
	saved  []logstore.Record
}

func (s *faultyStore) Save(ctx context.Context, r *logstore.Record) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.panics {
		panic("store exploded")
	}
	if s.fail != nil {
		return s.fail
	}
	if r.ID == 0 {
		r.ID = int64(len(s.saved) + 1)
	}
	s.saved = append(s.saved, *r)
	return nil
}

func (s *faultyStore) set(fail error, panics bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fail, s.panics = fail, panics
}

func (s *faultyStore) last() logstore.Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.saved) == 0 {
		return logstore.Record{}
	}
	return s.saved[len(s.saved)-1]
}

// startTestServer serves a milter on loopback with the given extra config.
func startTestServer(t *testing.T, extra string, store Store) (*Server, string) {
	t.Helper()
	return startLoggingServer(t, extra, store, io.Discard)
}

// startLoggingServer is startTestServer with the daemon's log written to
// out, as text.
func startLoggingServer(t *testing.T, extra string, store Store, out io.Writer) (*Server, string) {
	t.Helper()
	cfg, err := policy.Parse("test", []byte(`hostname = "mx.example.com"
[relay.sender_login]
"alice" = ["alice@example.com"]
[[organization]]
name = "example"
domains = ["example.com"]
`+extra))
	if err != nil {
		t.Fatal(err)
	}
	checker := &spf.Checker{Resolver: &resolver.Fake{TXT: map[string][]string{"sender.test": {"v=spf1 +all"}}}}
	srv := NewServer(policy.NewEngine(cfg, checker), store, slog.New(slog.NewTextHandler(out, nil)))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	return srv, ln.Addr().String()
}

// dialSession opens a session like Postfix does, up to HELO.
func dialSession(t *testing.T, addr, clientIP string, macros *milter.MacroBag) (*milter.ClientSession, *milter.Action) {
	t.Helper()
	if macros == nil {
		macros = milter.NewMacroBag()
	}
	s, err := milter.NewClient("tcp", addr, milter.WithAction(milter.AllClientSupportedActionMasks)).Session(macros)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	a, err := s.Conn("client.test", milter.FamilyInet, 1234, clientIP)
	if err != nil {
		t.Fatal(err)
	}
	if a.Type == milter.ActionContinue {
		if a, err = s.Helo("client.test"); err != nil {
			t.Fatal(err)
		}
	}
	return s, a
}

func sendMessage(t *testing.T, s *milter.ClientSession, from, rcpt string) *milter.Action {
	t.Helper()
	for _, step := range []func() (*milter.Action, error){
		func() (*milter.Action, error) { return s.Mail(from, "") },
		func() (*milter.Action, error) { return s.Rcpt(rcpt, "") },
		s.DataStart,
	} {
		a, err := step()
		if err != nil {
			t.Fatal(err)
		}
		if a.Type != milter.ActionContinue {
			return a
		}
	}
	if _, err := s.HeaderField("Subject", " test", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.HeaderEnd(); err != nil {
		t.Fatal(err)
	}
	_, a, err := s.BodyReadFrom(strings.NewReader("body\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestLogFailureTempfails: mail that cannot be logged is never accepted,
// the daemon's own log says so with the session and its client, and the
// daemon recovers when the log works again.
func TestLogFailureTempfails(t *testing.T) {
	store := &faultyStore{}
	var out syncbuf.Buffer
	_, addr := startLoggingServer(t, "", store, &out)

	for _, tt := range []struct {
		name string
		from string
		rcpt string
		auth string
	}{
		{"end of message", "x@sender.test", "u@example.com", ""},
		{"refusal at MAIL", "bob@example.com", "u@example.com", "alice"},
		{"refusal at RCPT", "x@sender.test", "v@elsewhere.test", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			store.set(errors.New("disk I/O error"), false)
			macros := milter.NewMacroBag()
			macros.Set(milter.MacroAuthAuthen, tt.auth)
			s, _ := dialSession(t, addr, "192.0.2.1", macros)
			a := sendMessage(t, s, tt.from, tt.rcpt)
			if !strings.HasPrefix(a.SMTPReply, "451 4.3.0 LogUnavailable") {
				t.Errorf("reply %q; want 451 4.3.0", a.SMTPReply)
			}
		})
	}
	lines := regexp.MustCompile(`(?m)^.*msg="cannot write the transaction log".*$`).FindAllString(out.String(), -1)
	if len(lines) < 3 {
		t.Errorf("%d log lines about the failed saves, want one per session at least:\n%s", len(lines), out.String())
	}
	for _, l := range lines {
		if !regexp.MustCompile(` session=\d+ client=192\.0\.2\.1 .*err="disk I/O error"`).MatchString(l) {
			t.Errorf("log line without the session, its client or the error: %s", l)
		}
	}

	store.set(nil, false)
	s, _ := dialSession(t, addr, "192.0.2.1", nil)
	if a := sendMessage(t, s, "x@sender.test", "u@example.com"); a.Type != milter.ActionAccept {
		t.Errorf("after the log recovered: %v %q; want accept", a, a.SMTPReply)
	}
	if r := store.last(); r.Action != "accept" {
		t.Errorf("row after recovery: %+v", r)
	}
}

// TestPanicIsContained: a panic in a session tempfails that session only.
func TestPanicIsContained(t *testing.T) {
	store := &faultyStore{}
	_, addr := startTestServer(t, "", store)
	store.set(nil, true)
	s, _ := dialSession(t, addr, "192.0.2.1", nil)
	if a := sendMessage(t, s, "x@sender.test", "u@example.com"); !strings.HasPrefix(a.SMTPReply, "451 4.3.0 InternalError") {
		t.Errorf("reply %q; want 451 4.3.0 InternalError", a.SMTPReply)
	}
	store.set(nil, false)
	s2, _ := dialSession(t, addr, "192.0.2.1", nil)
	if a := sendMessage(t, s2, "x@sender.test", "u@example.com"); a.Type != milter.ActionAccept {
		t.Errorf("next session: %v %q; want accept", a, a.SMTPReply)
	}
}

// TestMaxSessions: sessions beyond milter.max_sessions are tempfailed at
// connect and logged; the slot is free again once a session ends.
func TestMaxSessions(t *testing.T) {
	store := &faultyStore{}
	srv, addr := startTestServer(t, "[milter]\nmax_sessions = 1\n", store)
	first, a := dialSession(t, addr, "192.0.2.1", nil)
	if a.Type != milter.ActionContinue {
		t.Fatalf("first session: %v", a)
	}
	second, a := dialSession(t, addr, "192.0.2.2", nil)
	if !strings.HasPrefix(a.SMTPReply, "451 4.3.2 Busy") {
		t.Errorf("second session: %q; want 451 4.3.2 Busy", a.SMTPReply)
	}
	if r := store.last(); r.Reason != "Busy" || r.ClientIP != "192.0.2.2" {
		t.Errorf("row for the refused session: %+v", r)
	}
	first.Close()
	second.Close()
	deadline := time.Now().Add(5 * time.Second)
	for srv.Active() > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if _, a = dialSession(t, addr, "192.0.2.3", nil); a.Type != milter.ActionContinue {
		t.Errorf("after the sessions ended (%d open): %v %q; want continue", srv.Active(), a, a.SMTPReply)
	}
}

func TestListenUnixSocket(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "run", "mxguard.sock")
	cfg := policy.MilterConfig{Listen: "unix:" + path, SocketMode: "0640"}

	ln, err := Listen(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o640 || fi.Mode()&os.ModeSocket == 0 {
		t.Errorf("socket %v mode %v; want a socket with 0640", err, fi.Mode())
	}
	// A live socket is never replaced.
	if _, err := Listen(cfg); err == nil || !strings.Contains(err.Error(), "another process is listening") {
		t.Errorf("second listener on a live socket: %v", err)
	}
	// A stale one (its listener gone without removing the file) is.
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	ln2, err := Listen(cfg)
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	ln2.Close()

	// Anything that is not a socket is left alone.
	file := filepath.Join(dir, "not-a-socket")
	os.WriteFile(file, []byte("keep me"), 0o600)
	if _, err := Listen(policy.MilterConfig{Listen: "unix:" + file, SocketMode: "0660"}); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("regular file: %v", err)
	}
	if b, _ := os.ReadFile(file); string(b) != "keep me" {
		t.Error("regular file was changed")
	}
}

// TestHeaderLimits: a header over milter.max_headers fields or
// milter.max_header_bytes is refused with 552 5.3.4 and logged.
func TestHeaderLimits(t *testing.T) {
	store := &faultyStore{}
	_, addr := startTestServer(t, "[milter]\nmax_headers = 5\nmax_header_bytes = 4096\n", store)
	for name, fields := range map[string][][2]string{
		"too many fields": {{"A", " 1"}, {"B", " 2"}, {"C", " 3"}, {"D", " 4"}, {"E", " 5"}, {"F", " 6"}},
		"too many bytes":  {{"Subject", " " + strings.Repeat("x", 5000)}},
	} {
		t.Run(name, func(t *testing.T) {
			s, _ := dialSession(t, addr, "192.0.2.1", nil)
			for _, step := range []func() (*milter.Action, error){
				func() (*milter.Action, error) { return s.Mail("x@sender.test", "") },
				func() (*milter.Action, error) { return s.Rcpt("u@example.com", "") },
				s.DataStart,
			} {
				if a, err := step(); err != nil || a.Type != milter.ActionContinue {
					t.Fatalf("%v %v", a, err)
				}
			}
			// Header fields get no reply (SMFIP_NR_HDR): the refusal
			// comes at end of header.
			for _, f := range fields {
				if _, err := s.HeaderField(f[0], f[1], nil); err != nil {
					t.Fatal(err)
				}
			}
			last, err := s.HeaderEnd()
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(last.SMTPReply, "552 5.3.4 HeaderTooLarge") {
				t.Errorf("reply %q; want 552 5.3.4", last.SMTPReply)
			}
			if r := store.last(); r.Reason != "HeaderTooLarge" || r.Action != "reject" {
				t.Errorf("row %+v", r)
			}
		})
	}
}

// TestConnectionReuse: an MTA may reuse a milter connection for the next
// SMTP connection (SMFIC_QUIT_NC); each SMTP connection gets its rows and
// the session is counted once.
func TestConnectionReuse(t *testing.T) {
	store := &faultyStore{}
	srv, addr := startTestServer(t, "", store)
	macros := milter.NewMacroBag()
	s, a := dialSession(t, addr, "192.0.2.1", macros)
	if a.Type != milter.ActionContinue {
		t.Fatal(a)
	}
	if err := s.Reset(macros); err != nil { // HELO only, then a new connection
		t.Fatal(err)
	}
	// The reset has no reply: wait for the server to act on it.
	deadline := time.Now().Add(5 * time.Second)
	for store.last().Reason != "NoTransaction" && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if r := store.last(); r.Reason != "NoTransaction" || r.ClientIP != "192.0.2.1" {
		t.Errorf("row of the first connection: %+v", r)
	}
	if a, err := s.Conn("second.test", milter.FamilyInet, 1, "192.0.2.2"); err != nil || a.Type != milter.ActionContinue {
		t.Fatalf("second connection: %v %v", a, err)
	}
	if _, err := s.Helo("second.test"); err != nil {
		t.Fatal(err)
	}
	if a := sendMessage(t, s, "x@sender.test", "u@example.com"); a.Type != milter.ActionAccept {
		t.Fatalf("message on the reused connection: %v", a)
	}
	if r := store.last(); r.ClientIP != "192.0.2.2" || r.Helo != "second.test" || r.Action != "accept" {
		t.Errorf("row of the second connection: %+v", r)
	}
	if n := srv.Active(); n != 1 {
		t.Errorf("%d sessions counted; want 1", n)
	}
}

// TestClientName: Sendmail's "[address]" for a client without a verified
// name is logged as "unknown", as Postfix says it.
func TestClientName(t *testing.T) {
	store := &faultyStore{}
	_, addr := startTestServer(t, "", store)
	s, err := milter.NewClient("tcp", addr).Session(milter.NewMacroBag())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Conn("[192.0.2.9]", milter.FamilyInet, 1, "192.0.2.9"); err != nil {
		t.Fatal(err)
	}
	s.Helo("h.test")
	if a := sendMessage(t, s, "x@sender.test", "u@example.com"); a.Type != milter.ActionAccept {
		t.Fatal(a)
	}
	if r := store.last(); r.ClientName != "unknown" || r.ClientIP != "192.0.2.9" {
		t.Errorf("client %q %q; want unknown, 192.0.2.9", r.ClientName, r.ClientIP)
	}
}
