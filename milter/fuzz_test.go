package milter

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/d--j/go-milter"

	"github.com/mxguard/mxguard/logstore"
	"github.com/mxguard/mxguard/policy"
	"github.com/mxguard/mxguard/scanners/resolver"
	"github.com/mxguard/mxguard/scanners/spf"
)

// FuzzSession feeds raw bytes to a whole milter session, as an MTA on the
// other end of the socket would send them, through the frame guard and
// go-milter into the session and the policy engine. A panic in a session
// goroutine kills the process, which is what the fuzzer looks for; the
// target also fails on panics the session recovers, on replies an MTA would
// call a protocol error, on sessions that outlive their connection, and on a
// server that stops answering well-formed conversations.
func FuzzSession(f *testing.F) {
	for _, s := range sessionSeeds() {
		f.Add(s.in)
	}
	fs := startFuzzServer(f)
	baseline := runtime.NumGoroutine()
	f.Cleanup(func() {
		// The seed run (plain "go test") ends here: the server must still
		// serve, and every session of the seeds must be gone.
		fs.healthy(f)
		noGoroutineLeak(f, baseline)
	})
	var inputs atomic.Int64
	f.Fuzz(func(t *testing.T, in []byte) {
		fs.converse(t, in, false)
		// A health check costs a whole conversation; while fuzzing, one
		// every so often is enough, since a dead process is caught anyway.
		if inputs.Add(1)%healthEvery == 0 {
			fs.healthy(t)
		}
	})
}

// TestSessionSeeds checks that each seed of FuzzSession gets the replies a
// real MTA would: the well-formed conversations must get through to the end
// of message, or they would seed the fuzzer with nothing but handshakes.
// Each seed is sent whole, and again cut into odd pieces on its way, which
// must not change a thing.
func TestSessionSeeds(t *testing.T) {
	fs := startFuzzServer(t)
	for _, s := range sessionSeeds() {
		t.Run(s.name, func(t *testing.T) {
			for _, split := range []bool{false, true} {
				if got := fs.converse(t, s.in, split); got != s.want {
					t.Errorf("split %v: reply codes %q; want %q", split, got, s.want)
				}
			}
		})
	}
	fs.healthy(t)
}

const (
	// healthEvery is how many fuzz inputs run between health checks.
	healthEvery = 500
	// sessionDeadline bounds one fuzzed session: the server must have
	// closed the connection by then, after the input ended.
	sessionDeadline = 5 * time.Second
)

// fuzzConfig is the policy the fuzzed sessions meet. The limits are low so
// that short inputs reach them.
const fuzzConfig = `hostname = "mx.example.com"
[milter]
check_timeout = "2s"
max_recipients = 5
max_headers = 30
max_header_bytes = 98304
[relay]
trusted_networks = ["10.0.0.0/8", "2001:db8:1::/48"]
block_networks = ["198.51.100.0/24", "2001:db8:bad::/48"]
[relay.sender_login]
"alice" = ["alice@example.com"]
"bob@example.com" = ["@example.com"]
[[organization]]
name = "example"
domains = ["example.com", "example.net"]
`

// fuzzDNS is the DNS the SPF checks see: no lookup leaves the process.
func fuzzDNS() *resolver.Fake {
	return &resolver.Fake{
		TXT: map[string][]string{
			"sender.test": {"v=spf1 ip4:192.0.2.1 ip6:2001:db8:25::/48 -all"},
			"fail.test":   {"v=spf1 ip4:192.0.2.99 -all"},
			"soft.test":   {"v=spf1 ip4:192.0.2.99 ~all"},
			"example.com": {"v=spf1 ip4:192.0.2.10 -all"},
			"perm.test":   {"v=spf1 include: -all"},
			"loop.test":   {"v=spf1 include:loop.test -all"},
		},
		Errors: map[string]error{"temp.test": resolver.ServFail("temp.test")},
	}
}

// fuzzServer is a Server on loopback TCP with a fake store and DNS.
type fuzzServer struct {
	srv    *Server
	addr   string
	store  *recordingStore
	panics *panicLog
	checks atomic.Int64 // health checks run, for unique queue ids
}

// startFuzzServer starts the server once per process: the fuzzer runs every
// input of a worker in the same process, one at a time.
func startFuzzServer(tb testing.TB) *fuzzServer {
	tb.Helper()
	cfg, err := policy.Parse("fuzz", []byte(fuzzConfig))
	if err != nil {
		tb.Fatal(err)
	}
	fs := &fuzzServer{store: &recordingStore{}, panics: &panicLog{}}
	var out io.Writer = io.Discard
	if os.Getenv("MXGUARD_FUZZ_LOG") != "" { // to watch a crasher's session
		out = os.Stderr
	}
	log := slog.New(spyHandler{slog.NewTextHandler(out, nil), fs.panics})
	fs.srv = NewServer(policy.NewEngine(cfg, &spf.Checker{Resolver: fuzzDNS()}), fs.store, log)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	fs.addr = ln.Addr().String()
	served := make(chan error, 1)
	go func() { served <- fs.srv.Serve(ln) }()
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := fs.srv.Shutdown(ctx); err != nil {
			tb.Errorf("shutdown: %v", err)
		}
		if err := <-served; err != nil {
			tb.Errorf("serve: %v", err)
		}
	})
	return fs
}

// converse sends in on a fresh connection, in one write or split by
// writeSplit, and returns the codes of the replies. It fails when the server
// panicked (even a recovered panic), answered something an MTA would reject,
// or kept the session open after the input ended.
//
// The fuzzer writes whole inputs: how a split input arrives depends on
// timing, which would make the coverage it steers by flaky.
func (fs *fuzzServer) converse(t *testing.T, in []byte, split bool) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", fs.addr, sessionDeadline)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	conn := c.(*net.TCPConn)
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(sessionDeadline))

	// Read concurrently: the server must never block on us while we write.
	type result struct {
		out []byte
		err error
	}
	read := make(chan result, 1)
	go func() {
		out, err := io.ReadAll(conn)
		read <- result{out, err}
	}()
	// Write errors are expected: the server closes on a bad frame.
	if split {
		writeSplit(conn, in)
	} else {
		conn.Write(in)
	}
	conn.CloseWrite()
	r := <-read
	// Ending with a reset instead of EOF is fine (the server closed with
	// our bytes unread); running into the deadline is not.
	if errors.Is(r.err, os.ErrDeadlineExceeded) {
		t.Fatalf("the server did not end the session within %v of the input's end; input %s", sessionDeadline, describe(in))
	}
	// No TIME_WAIT: fuzzing opens thousands of connections a second.
	conn.SetLinger(0)

	if p := fs.panics.take(); p != "" {
		t.Fatalf("session panicked (recovered): %s\ninput %s", p, describe(in))
	}
	codes, err := checkReplies(r.out)
	if err != nil {
		t.Fatalf("bad reply stream: %v\nreplies %q\ninput %s", err, r.out, describe(in))
	}
	// go-milter runs Cleanup before it closes the connection, so by now
	// the session must have left the count of open sessions.
	if n := fs.srv.Active(); n != 0 {
		t.Fatalf("%d sessions still counted as open after the connection closed; input %s", n, describe(in))
	}
	return codes
}

// writeSplit writes in in chunks of growing, odd sizes (1, 2, 3, 5, 8, ...
// bytes), so that frame headers and payloads reach the server cut at many
// places while a long input still takes few writes.
func writeSplit(w io.Writer, in []byte) {
	a, b := 1, 2
	for len(in) > 0 {
		n := min(a, len(in))
		if _, err := w.Write(in[:n]); err != nil {
			return
		}
		in = in[n:]
		a, b = b, a+b
	}
}

// healthy runs a well-formed conversation with go-milter's client and
// requires it to be accepted and logged.
func (fs *fuzzServer) healthy(tb testing.TB) {
	tb.Helper()
	qid := fmt.Sprintf("HEALTH%d", fs.checks.Add(1))
	macros := milter.NewMacroBag()
	macros.Set(milter.MacroMTAFQDN, "mx.example.com")
	macros.Set(milter.MacroDaemonName, "smtpd")
	client := milter.NewClient("tcp", fs.addr,
		milter.WithAction(milter.AllClientSupportedActionMasks),
		milter.WithReadTimeout(sessionDeadline), milter.WithWriteTimeout(sessionDeadline))
	s, err := client.Session(macros)
	if err != nil {
		tb.Fatalf("health check: session: %v", err)
	}
	defer s.Close()
	step := func(what string, a *milter.Action, err error) {
		tb.Helper()
		if err != nil || a.Type != milter.ActionContinue {
			tb.Fatalf("health check: %s: %v %v; want continue", what, a, err)
		}
	}
	a, err := s.Conn("mail.sender.test", milter.FamilyInet, 51234, "192.0.2.1")
	step("connect", a, err)
	a, err = s.Helo("mail.sender.test")
	step("helo", a, err)
	a, err = s.Mail("<x@sender.test>", "SIZE=100")
	step("mail", a, err)
	a, err = s.Rcpt("<u@example.com>", "")
	step("rcpt", a, err)
	macros.Set(milter.MacroQueueId, qid)
	a, err = s.DataStart()
	step("data", a, err)
	a, err = s.HeaderField("Subject", " health check", nil)
	step("header", a, err)
	a, err = s.HeaderEnd()
	step("eoh", a, err)
	_, a, err = s.BodyReadFrom(strings.NewReader("hello\r\n"))
	if err != nil || a.Type != milter.ActionAccept {
		tb.Fatalf("health check: eom: %v %v; want accept", a, err)
	}
	if r, ok := fs.store.find(qid); !ok || r.Action != "accept" || r.SPF != "pass" {
		tb.Fatalf("health check: row %+v (found %v); want accepted with SPF pass", r, ok)
	}
	s.Close()
	// Let the session end, so the next input starts with none open.
	deadline := time.Now().Add(sessionDeadline)
	for fs.srv.Active() != 0 {
		if time.Now().After(deadline) {
			tb.Fatalf("health check: session still open %v after the client closed", sessionDeadline)
		}
		time.Sleep(time.Millisecond)
	}
	if p := fs.panics.take(); p != "" {
		tb.Fatalf("health check: session panicked (recovered): %s", p)
	}
}

// noGoroutineLeak waits for the goroutines of finished sessions (and of
// their SPF checks) to end.
func noGoroutineLeak(tb testing.TB, baseline int) {
	tb.Helper()
	const slack = 2 // the runtime's and the testing package's own
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > baseline+slack {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			tb.Fatalf("%d goroutines, %d before the sessions:\n%s", runtime.NumGoroutine(), baseline, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// checkReplies parses the server's side of a session and returns the reply
// codes in order. It fails on what an MTA would call a protocol error: a
// frame cut short, an empty frame, OPTNEG anywhere but first, a code no
// filter may send, an SMTP reply Postfix would refuse as malformed
// (milter8.c, SMFIR_REPLYCODE), or a header edit that would make the MTA
// write more header fields than the one edited.
func checkReplies(out []byte) (string, error) {
	var codes strings.Builder
	for len(out) > 0 {
		if len(out) < 4 {
			return codes.String(), fmt.Errorf("%d bytes left, less than a frame header", len(out))
		}
		n := binary.BigEndian.Uint32(out)
		if n == 0 || uint64(n) > uint64(len(out)-4) {
			return codes.String(), fmt.Errorf("frame length %d with %d bytes left", n, len(out)-4)
		}
		code, data := out[4], out[5:4+n]
		out = out[4+n:]
		switch {
		case code == 'O':
			if codes.Len() > 0 {
				return codes.String(), errors.New("OPTNEG reply after the negotiation")
			}
		case strings.IndexByte("acdrtspyhimq+-e2b", code) < 0:
			return codes.String(), fmt.Errorf("unknown reply code %q", code)
		case code == 'y':
			if err := checkSMTPReply(data); err != nil {
				return codes.String(), err
			}
		case code == 'h', code == 'i', code == 'm':
			if err := checkHeaderEdit(code, data); err != nil {
				return codes.String(), err
			}
		}
		codes.WriteByte(code)
	}
	return codes.String(), nil
}

// checkSMTPReply checks an SMFIR_REPLYCODE payload: one NUL at the end, and
// lines "ddd-x.y.z text" ... "ddd x.y.z text" with a 4xx or 5xx code that
// the enhanced code's class matches.
func checkSMTPReply(data []byte) error {
	text, ok := bytes.CutSuffix(data, []byte{0})
	if !ok || bytes.IndexByte(text, 0) >= 0 {
		return fmt.Errorf("reply %q is not one NUL-terminated string", data)
	}
	lines := strings.Split(string(text), "\r\n")
	for i, l := range lines {
		sep := byte('-')
		if i == len(lines)-1 {
			sep = ' '
		}
		if len(l) < 5 || (l[0] != '4' && l[0] != '5') || l[1] < '0' || l[1] > '9' || l[2] < '0' || l[2] > '9' ||
			l[3] != sep || l[4] != l[0] || l[:3] != lines[0][:3] || strings.ContainsAny(l, "\r\n") {
			return fmt.Errorf("malformed SMTP reply line %d %q in %q", i+1, l, text)
		}
	}
	return nil
}

// checkHeaderEdit checks SMFIR_ADDHEADER ("name NUL value NUL") and
// SMFIR_INSHEADER and SMFIR_CHGHEADER (the same after a 4-byte index): a
// field name of printable ASCII without a colon (RFC 5322 section 2.2), and
// a value whose line breaks all fold, that is, go on with a space or a tab.
// MTAs write the value as is, so any other line break in it starts a
// header field of the value's choosing.
func checkHeaderEdit(code byte, data []byte) error {
	if code != 'h' {
		if len(data) < 4 {
			return fmt.Errorf("header edit %q: %q has no index", code, data)
		}
		data = data[4:]
	}
	parts := bytes.Split(data, []byte{0})
	if len(parts) != 3 || len(parts[2]) != 0 {
		return fmt.Errorf("header edit %q: %q is not name NUL value NUL", code, data)
	}
	name, value := parts[0], parts[1]
	if len(name) == 0 || bytes.ContainsFunc(name, func(r rune) bool { return r <= ' ' || r > '~' || r == ':' }) {
		return fmt.Errorf("header edit %q: bad field name %q", code, name)
	}
	for i, c := range value {
		if c == '\r' || c == '\n' && (i+1 == len(value) || value[i+1] != ' ' && value[i+1] != '\t') {
			return fmt.Errorf("header edit %q: %s value %q has a line break that does not fold", code, name, value)
		}
	}
	return nil
}

// describe shows a failing input: which seed it is, or its bytes.
func describe(in []byte) string {
	for _, s := range sessionSeeds() {
		if bytes.Equal(s.in, in) {
			return "seed " + s.name
		}
	}
	if len(in) > 4096 {
		return fmt.Sprintf("%q... (%d bytes)", in[:4096], len(in))
	}
	return fmt.Sprintf("%q", in)
}

// recordingStore is a Store that keeps the last rows saved. Like logstore,
// the first Save of a row assigns its ID, and later Saves of it replace it.
type recordingStore struct {
	mu     sync.Mutex
	nextID int64
	recent []logstore.Record // newest last, at most keepRows
}

// keepRows bounds the memory the store takes over a long fuzzing run.
const keepRows = 64

func (s *recordingStore) Save(ctx context.Context, r *logstore.Record) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r.ID == 0 {
		s.nextID++
		r.ID = s.nextID
	}
	// The session reuses the slices of its record: copy them.
	c := *r
	c.HeadersAdded, c.Evidence, c.Recipients = slices.Clone(r.HeadersAdded), slices.Clone(r.Evidence), slices.Clone(r.Recipients)
	s.recent = slices.DeleteFunc(s.recent, func(o logstore.Record) bool { return o.ID == c.ID })
	if len(s.recent) == keepRows {
		s.recent = slices.Delete(s.recent, 0, 1)
	}
	s.recent = append(s.recent, c)
	return nil
}

// find returns the newest row with the queue id.
func (s *recordingStore) find(queueID string) (logstore.Record, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := len(s.recent) - 1; i >= 0; i-- {
		if s.recent[i].QueueID == queueID {
			return s.recent[i], true
		}
	}
	return logstore.Record{}, false
}

// panicLog collects the panics the sessions logged.
type panicLog struct {
	mu     sync.Mutex
	panics []string
}

func (l *panicLog) add(p string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.panics = append(l.panics, p)
}

// take returns and forgets the panics logged so far, "" if none.
func (l *panicLog) take() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	p := strings.Join(l.panics, "\n\n")
	l.panics = nil
	return p
}

// spyHandler passes log records on and notes those about panics: session
// recovers panics in its stages and only logs them, which hides them from
// the fuzzer, yet each is a bug.
type spyHandler struct {
	slog.Handler
	panics *panicLog
}

func (h spyHandler) Handle(ctx context.Context, r slog.Record) error {
	// go-milter's warnings start with "go-milter:" and may quote the
	// peer's bytes; mxguard's own panic lines start with "panic".
	if strings.HasPrefix(r.Message, "panic") {
		var b strings.Builder
		b.WriteString(r.Message)
		r.Attrs(func(a slog.Attr) bool {
			fmt.Fprintf(&b, "\n%s: %v", a.Key, a.Value)
			return true
		})
		h.panics.add(b.String())
	}
	return h.Handler.Handle(ctx, r)
}

func (h spyHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return spyHandler{h.Handler.WithAttrs(as), h.panics}
}

func (h spyHandler) WithGroup(name string) slog.Handler {
	return spyHandler{h.Handler.WithGroup(name), h.panics}
}

// The builders below write packets the way an MTA does (see
// /work/shared/mta-e2e/testmilter/tap.go for the layout): a 4-byte
// big-endian length that counts the command byte, the command byte, then
// the payload.

// mtaFrame builds a packet whose payload is parts, each NUL-terminated, as
// Postfix's milter8_write_cmd sends strings and string lists.
func mtaFrame(cmd byte, parts ...string) []byte {
	var payload []byte
	for _, p := range parts {
		payload = append(append(payload, p...), 0)
	}
	return mtaRawFrame(cmd, payload)
}

// mtaRawFrame builds a packet with the payload as is.
func mtaRawFrame(cmd byte, payload []byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(1+len(payload)))
	return append(append(b, cmd), payload...)
}

// mtaMacros builds SMFIC_MACRO for the command stage: the stage's command
// byte, then name, value, name, value, ... each NUL-terminated. Postfix
// sends the packet even when no macro of the list is defined.
func mtaMacros(stage byte, nameValues ...string) []byte {
	return mtaRawFrame('D', append([]byte{stage}, mtaFrame(0, nameValues...)[5:]...))
}

// mtaOptneg builds SMFIC_OPTNEG: version, actions and protocol masks.
func mtaOptneg(version, actions, protocol uint32) []byte {
	var p []byte
	for _, v := range []uint32{version, actions, protocol} {
		p = binary.BigEndian.AppendUint32(p, v)
	}
	return mtaRawFrame('O', p)
}

// mtaConnect builds SMFIC_CONNECT: host name, family, and for the families
// with an address ('4', '6', 'L') the port in network order and the address.
func mtaConnect(host string, family byte, port uint16, addr string) []byte {
	p := append([]byte(host), 0, family)
	if family != 'U' {
		p = binary.BigEndian.AppendUint16(p, port)
		p = append(append(p, addr...), 0)
	}
	return mtaRawFrame('C', p)
}

// Postfix 3.7 with milter_protocol = 6 offers every action it implements
// (milter8.c my_actions: SMFIF_ADDHDRS through SMFIF_SETSYMLIST) and every
// protocol bit of MILTER8_V6_PROTO_MASK (all SMFIP_NO* and SMFIP_NR_* bits,
// SKIP, RCPT_REJ, HDR_LEADSPC), and no SMFIP_MDS_* bit. Sendmail 8.17 sends
// the same (SMFI_CURR_ACTS, SMFI_CURR_PROT) at its default 64K chunk size.
const (
	mtaActions  = 0x1ff
	mtaProtocol = 0x1fffff
)

// sessionSeed is one seed input with the reply codes the server answers it
// with, in order (see TestSessionSeeds).
type sessionSeed struct {
	name string
	in   []byte
	want string
}

// header is one header field as the MTA passes it: the value keeps its
// leading space (SMFIP_HDR_LEADSPC) and folds with a bare "\n", as both
// Postfix and Sendmail send multi-line headers.
type header struct{ name, value string }

var seedHeaders = []header{
	{"From", " Sender <x@sender.test>"},
	{"To", " User <u@example.com>,\n\tOther <o@example.net>"},
	{"Subject", " quarterly report"},
	{"Date", " Tue, 4 Jun 2024 10:00:00 +0000"},
	{"Message-ID", " <20240604100000.1234@sender.test>"},
	{"MIME-Version", " 1.0"},
	{"Content-Type", " text/plain; charset=utf-8"},
}

const seedBody = "Hello,\r\n\r\nthe report is attached.\r\n-- \r\nSender\r\n"

// postfixMessage is what Postfix sends from DATA to end of message, with
// the queue id macro before every event from DATA on (Postfix 3.7 assigns
// it after the first accepted RCPT), and its answer codes.
func postfixMessage(qid string, hs []header) ([]byte, string) {
	// DATA, header fields and body chunks get no reply (SMFIP_NR_DATA,
	// SMFIP_NR_HDR, SMFIP_NR_BODY).
	b := slices.Concat(mtaMacros('T', "i", qid), mtaFrame('T'))
	for _, h := range hs {
		b = slices.Concat(b, mtaMacros('L', "i", qid), mtaFrame('L', h.name, h.value))
	}
	b = slices.Concat(b,
		mtaMacros('N', "i", qid), mtaFrame('N'),
		mtaMacros('B', "i", qid), mtaRawFrame('B', []byte(seedBody)),
		mtaMacros('E', "i", qid), mtaFrame('E'))
	return b, "c" + "ia" // EOH; Authentication-Results inserted, accept
}

// postfixConnect is Postfix's handshake up to HELO for a client, with the
// connect macros of the GUIDE's main.cf (milter_connect_macros).
func postfixConnect(name, family, ip string, port uint16) []byte {
	return slices.Concat(
		mtaOptneg(6, mtaActions, mtaProtocol),
		mtaMacros('C', "j", "mx.example.com", "{daemon_name}", "mx.example.com",
			"{daemon_addr}", "203.0.113.25", "{daemon_port}", "25", "v", "Postfix 3.7.11",
			"_", name+" ["+ip+"]", "{client_addr}", ip, "{client_port}", fmt.Sprint(port),
			"{client_name}", name, "{client_ptr}", name, "{client_connections}", "0"),
		mtaConnect(name, family[0], port, ip),
		mtaMacros('H'), // no TLS: none of milter_helo_macros is defined
		mtaFrame('H', name))
}

// sessionSeeds are the seeds of FuzzSession: real MTA conversations and
// the broken frames the guard exists for. Answers: O optneg, c continue,
// a accept, y reply code, i insert header, m change header. HELO, DATA,
// header fields and body chunks get none: mxguard negotiates SMFIP_NR_HELO,
// SMFIP_NR_DATA, SMFIP_NR_HDR and SMFIP_NR_BODY.
func sessionSeeds() []sessionSeed {
	const qid = "4F3A2B1C"
	postfixMsg, postfixMsgWant := postfixMessage(qid, seedHeaders)

	// Postfix 3.7: one message from an SPF-passing client, then ABORT
	// (Postfix resets the milter after every transaction) and QUIT.
	postfix := slices.Concat(
		postfixConnect("mail.sender.test", "4", "192.0.2.1", 51234),
		mtaMacros('M', "{mail_addr}", "x@sender.test", "{mail_host}", "sender.test", "{mail_mailer}", "smtp"),
		mtaFrame('M', "<x@sender.test>", "SIZE=123", "BODY=8BITMIME"),
		mtaMacros('R', "{rcpt_addr}", "u@example.com", "{rcpt_host}", "example.com", "{rcpt_mailer}", "virtual"),
		mtaFrame('R', "<u@example.com>"),
		postfixMsg,
		mtaFrame('A'),
		mtaFrame('Q'))
	postfixWant := "O" + "ccc" + postfixMsgWant // HELO gets no reply (SMFIP_NR_HELO)

	// Sendmail 8.17 with the macros mxguard asks for: the queue id from
	// MAIL on, no macro packet per header or body chunk, {msg_id} at EOM,
	// no ABORT before QUIT.
	sendmailQID := "6AML8CmU018568"
	sendmail := slices.Concat(
		mtaOptneg(6, mtaActions, mtaProtocol),
		mtaMacros('C', "j", "mx.example.com", "{daemon_name}", "MTA", "{if_name}", "mx.example.com",
			"{if_addr}", "203.0.113.25", "{client_name}", "mail.sender.test", "{client_ptr}", "mail.sender.test", "v", "8.17.1.9"),
		mtaConnect("mail.sender.test", '4', 40123, "192.0.2.1"),
		mtaFrame('H', "mail.sender.test"),
		mtaMacros('M', "i", sendmailQID, "{mail_mailer}", "esmtp", "{mail_host}", "sender.test", "{mail_addr}", "x@sender.test"),
		mtaFrame('M', "<x@sender.test>", "SIZE=2048"),
		mtaMacros('R', "i", sendmailQID, "{rcpt_mailer}", "local", "{rcpt_host}", "", "{rcpt_addr}", "u"),
		mtaFrame('R', "<u@example.com>"),
		mtaMacros('T', "i", sendmailQID),
		mtaFrame('T'))
	sendmailWant := "O" + "ccc" // CONNECT, MAIL, RCPT; HELO, DATA, headers and body get no reply
	for _, h := range seedHeaders {
		sendmail = append(sendmail, mtaFrame('L', h.name, h.value)...)
	}
	sendmail = slices.Concat(sendmail,
		mtaMacros('N', "i", sendmailQID), mtaFrame('N'),
		mtaRawFrame('B', []byte(seedBody)),
		mtaMacros('E', "i", sendmailQID, "{msg_id}", "<20240604100000.1234@sender.test>"), mtaFrame('E'),
		mtaFrame('Q'))
	sendmailWant += "c" + "ia" // EOH; Authentication-Results inserted, accept

	// Two messages on one IPv6 connection; in the first, one recipient is
	// refused (relay denied) and one accepted; the second is a bounce.
	msg2, msg2Want := postfixMessage("4F3A2B1D", seedHeaders[:3])
	twoMessages := slices.Concat(
		postfixConnect("mail6.sender.test", "6", "2001:db8:25::7", 41000),
		mtaMacros('M'), mtaFrame('M', "<x@sender.test>", "SIZE=99"),
		mtaMacros('R'), mtaFrame('R', "<v@elsewhere.test>"),
		mtaMacros('R'), mtaFrame('R', "<u@example.com>", "NOTIFY=NEVER"),
		postfixMsg, mtaFrame('A'),
		mtaMacros('M'), mtaFrame('M', "<>"),
		mtaMacros('R'), mtaFrame('R', "<postmaster@example.net>"),
		msg2, mtaFrame('A'),
		mtaFrame('Q'))
	twoMessagesWant := "O" + "c" + "cyc" + postfixMsgWant + "cc" + msg2Want

	// An authenticated submission after STARTTLS, with the macros mxguard
	// asks for (GUIDE 6.2 A): a second HELO with the TLS macros, and the
	// auth macros at MAIL. Relaying to a foreign domain is allowed.
	authQID := "4F3A2B1E"
	authMsg, authMsgWant := postfixMessage(authQID, seedHeaders)
	auth := slices.Concat(
		mtaOptneg(6, mtaActions, mtaProtocol),
		mtaMacros('C', "j", "mx.example.com", "{daemon_name}", "submission", "{client_name}", "laptop.example.org", "{client_ptr}", "laptop.example.org"),
		mtaConnect("laptop.example.org", '4', 52000, "203.0.113.5"),
		mtaMacros('H'), mtaFrame('H', "[192.168.1.20]"),
		mtaMacros('H', "{tls_version}", "TLSv1.3", "{cipher}", "TLS_AES_256_GCM_SHA384"), mtaFrame('H', "[192.168.1.20]"),
		mtaMacros('M', "{auth_type}", "PLAIN", "{auth_authen}", "alice"),
		mtaFrame('M', "<alice@example.com>", "AUTH=<alice@example.com>", "BODY=8BITMIME"),
		mtaMacros('R'), mtaFrame('R', "<friend@elsewhere.test>"),
		authMsg, mtaFrame('A'), mtaFrame('Q'))
	authWant := "O" + "ccc" + authMsgWant

	// What a well-behaved MTA sends up to the end of HELO, to put the
	// broken frames at the stages where they hurt.
	hello := slices.Concat(
		mtaOptneg(6, mtaActions, mtaProtocol),
		mtaConnect("mail.sender.test", '4', 51234, "192.0.2.1"),
		mtaFrame('H', "mail.sender.test"))
	mailRcpt := slices.Concat(mtaFrame('M', "<x@sender.test>"), mtaFrame('R', "<u@example.com>"), mtaFrame('T'))
	after := func(parts ...[]byte) []byte { return slices.Concat(append([][]byte{hello}, parts...)...) }

	// A 70 KB header, over go-milter's 64 KB chunk size and TCP's segment
	// size, folded at odd places; TestSessionSeeds also cuts it on its way.
	var long strings.Builder
	long.WriteString(" start")
	for i := 0; long.Len() < 70<<10; i++ {
		long.WriteString(strings.Repeat("x", 997+i%13))
		long.WriteString("\n\t")
	}
	bigHeaders := after(mailRcpt, mtaFrame('L', "X-Long", long.String()), mtaFrame('L', "Subject", " hi"))

	// Many small headers: more than milter.max_headers (30).
	var manyHeaders []byte
	for i := range 31 {
		manyHeaders = append(manyHeaders, mtaFrame('L', fmt.Sprintf("X-H%d", i), " v")...)
	}

	// Many recipients: more than milter.max_recipients (5).
	var manyRcpts []byte
	for i := range 7 {
		manyRcpts = append(manyRcpts, mtaFrame('R', fmt.Sprintf("<u%d@example.com>", i))...)
	}

	return []sessionSeed{
		{"postfix 3.7", postfix, postfixWant},
		{"sendmail 8.17", sendmail, sendmailWant},
		{"two messages on one connection", twoMessages, twoMessagesWant},
		{"authenticated submission", auth, authWant},

		// The guard: frames that panic go-milter v0.10.2 close the
		// connection before go-milter reads them.
		{"zero length first", []byte{0, 0, 0, 0}, ""},
		{"zero length after negotiation", after([]byte{0, 0, 0, 0}), "Oc"},
		{"huge length", after([]byte{0xff, 0xff, 0xff, 0xff, 'B'}), "Oc"},
		{"length just over MaxFrame", after(binary.BigEndian.AppendUint32(nil, MaxFrame+1), []byte("B")), "Oc"},
		{"huge length first", []byte{0x7f, 0xff, 0xff, 0xff, 'O'}, ""},
		{"CONNECT without NUL", slices.Concat(mtaOptneg(6, mtaActions, mtaProtocol), mtaRawFrame('C', []byte("host"))), "O"},
		{"CONNECT without family", slices.Concat(mtaOptneg(6, mtaActions, mtaProtocol), mtaRawFrame('C', []byte("host\x00"))), "O"},
		{"CONNECT empty", slices.Concat(mtaOptneg(6, mtaActions, mtaProtocol), mtaRawFrame('C', nil)), "O"},
		{"CONNECT without port", slices.Concat(mtaOptneg(6, mtaActions, mtaProtocol), mtaRawFrame('C', []byte("host\x004"))), "O"},
		{"CONNECT bad address", slices.Concat(mtaOptneg(6, mtaActions, mtaProtocol), mtaConnect("host", '4', 25, "999.1.1.1")), "O"},
		{"MAIL without NUL", after(mtaRawFrame('M', []byte("<x@sender.test>"))), "Oc"},
		{"MAIL empty", after(mtaRawFrame('M', nil)), "Oc"},
		{"RCPT without NUL", after(mtaFrame('M', "<x@sender.test>"), mtaRawFrame('R', []byte("<u@example.com>"))), "Occ"},
		{"RCPT empty", after(mtaFrame('M', "<x@sender.test>"), mtaRawFrame('R', nil)), "Occ"},
		{"HELO empty", slices.Concat(mtaOptneg(6, mtaActions, mtaProtocol), mtaConnect("h", '4', 1, "192.0.2.1"), mtaRawFrame('H', nil)), "Oc"},
		{"truncated frame", after(mtaFrame('M', "<x@sender.test>")[:10]), "Oc"},
		{"truncated length", after([]byte{0, 0}), "Oc"},
		{"garbage", []byte("EHLO mail.sender.test\r\nMAIL FROM:<x@sender.test>\r\n"), ""},
		{"garbage after negotiation", after([]byte("\x00\x00\x00\x05Zjunk\xff\xfe\x00\x01")), "Oc"},
		{"unknown command byte", after(mtaFrame('Z', "what")), "Oc"},
		{"NUL in a header value", after(mailRcpt, mtaFrame('L', "Subject", " hel\x00lo")), "Occc"},
		{"header without value", after(mailRcpt, mtaRawFrame('L', []byte("Subject\x00"))), "Occc"},
		{"header 70 KB split oddly", slices.Concat(bigHeaders, mtaFrame('N'), mtaRawFrame('B', []byte("body\r\n")), mtaFrame('E')), "Occccia"},
		{"header bytes over the limit", slices.Concat(bigHeaders, mtaFrame('L', "X-More", strings.Repeat("y", 30<<10)), mtaFrame('N'), mtaFrame('E')), "Occcya"},

		// Negotiation.
		{"OPTNEG too short", mtaRawFrame('O', []byte{0, 0, 0, 6, 0, 0, 1, 0xff}), ""},
		{"OPTNEG version 1", mtaOptneg(1, mtaActions, mtaProtocol), ""},
		{"OPTNEG version 7", mtaOptneg(7, mtaActions, mtaProtocol), ""},
		{"OPTNEG without header leading space", mtaOptneg(6, mtaActions, 0x0fffff), ""},
		{"OPTNEG without quarantine", mtaOptneg(6, 0x1df, mtaProtocol), ""},
		// Before version 6 there are no macro requests (SMFIF_SETSYMLIST),
		// which mxguard needs.
		{"OPTNEG version 2", slices.Concat(mtaOptneg(2, 0x3f, 0x7f), mtaConnect("h", '4', 1, "192.0.2.1")), ""},
		{"OPTNEG twice", slices.Concat(mtaOptneg(6, mtaActions, mtaProtocol), mtaOptneg(6, mtaActions, mtaProtocol)), "O"},
		{"no OPTNEG", mtaConnect("h", '4', 1, "192.0.2.1"), ""},

		// Connection kinds and verdicts at each stage.
		{"IPv6 with prefix and brackets", slices.Concat(mtaOptneg(6, mtaActions, mtaProtocol), mtaConnect("h", '6', 25, "IPv6:[2001:db8:25::1]"), mtaFrame('M', "<x@sender.test>")), "Occ"},
		{"unix socket client", slices.Concat(mtaOptneg(6, mtaActions, mtaProtocol), mtaConnect("localhost", 'L', 0, "/run/smtp.sock"), mtaFrame('M', "<root@example.com>"), mtaFrame('R', "<a@elsewhere.test>")), "Occc"},
		{"unknown family", slices.Concat(mtaOptneg(6, mtaActions, mtaProtocol), mtaConnect("localhost", 'U', 0, ""), mtaFrame('M', "<x@example.com>")), "Occ"},
		{"bad family", slices.Concat(mtaOptneg(6, mtaActions, mtaProtocol), mtaConnect("h", 'X', 1, "192.0.2.1")), "O"},
		{"blocked network", slices.Concat(mtaOptneg(6, mtaActions, mtaProtocol), mtaConnect("bad.test", '4', 1, "198.51.100.9"), mtaFrame('H', "bad.test"), mtaFrame('M', "<x@sender.test>")), "Oyc"},
		{"trusted network", slices.Concat(mtaOptneg(6, mtaActions, mtaProtocol), mtaConnect("app", '4', 1, "10.1.2.3"), mtaFrame('M', "<app@example.com>"), mtaFrame('R', "<v@elsewhere.test>"), mtaFrame('T'), mtaFrame('E')), "Occcia"},
		{"SPF fail", after(mtaFrame('M', "<x@example.com>")), "Ocy"},
		{"SPF fail at RCPT", after(mtaFrame('M', "<x@fail.test>"), mtaFrame('R', "<u@example.com>"), mtaFrame('E')), "Occyia"},
		{"SPF temperror", after(mtaFrame('M', "<x@temp.test>"), mtaFrame('R', "<u@example.com>"), mtaFrame('A')), "Occy"},
		{"SPF softfail tagged", after(mtaFrame('M', "<x@soft.test>"), mtaFrame('R', "<u@example.com>"), mtaFrame('E')), "Occciia"},
		{"SPF permerror and loop", after(mtaFrame('M', "<x@perm.test>"), mtaFrame('R', "<u@example.com>"), mtaFrame('A'), mtaFrame('M', "<x@loop.test>"), mtaFrame('R', "<u@example.net>"), mtaFrame('E')), "Occccciia"},
		{"spoofed local sender", after(mtaFrame('M', "<ceo@example.net>"), mtaFrame('R', "<u@example.com>")), "Ocyc"},
		{"sender login mismatch", slices.Concat(mtaOptneg(6, mtaActions, mtaProtocol), mtaMacros('M', "{auth_authen}", "alice"), mtaConnect("h", '4', 1, "203.0.113.5"), mtaMacros('M', "{auth_authen}", "alice", "{auth_type}", "LOGIN"), mtaFrame('M', "<bob@example.com>")), "Ocy"},
		{"login owning a domain", slices.Concat(mtaOptneg(6, mtaActions, mtaProtocol), mtaConnect("h", '4', 1, "203.0.113.5"), mtaMacros('M', "{auth_authen}", "bob@example.com"), mtaFrame('M', "<sales@example.com>"), mtaFrame('R', "<x@elsewhere.test>"), mtaFrame('E')), "Occc" + "ia"},
		{"reply text injection", after(mtaFrame('M', "<x@elsewhere.test>"), mtaFrame('R', "<a\r\n250 ok%s%n\x7f@far.test>")), "Occy"},
		{"too many recipients", after(mtaFrame('M', "<x@sender.test>"), manyRcpts, mtaFrame('E')), "Occcccccyyia"},
		{"too many headers", after(mailRcpt, manyHeaders, mtaFrame('N'), mtaFrame('E')), "Occcya"},
		{"forged Authentication-Results", after(mailRcpt,
			mtaFrame('L', "Authentication-Results", " mx.example.com; spf=pass smtp.mailfrom=ceo@example.com"),
			mtaFrame('L', "Authentication-Results", " (comment) MX.Example.Com.; dkim=pass"),
			mtaFrame('L', "X-MXGuard-Verdict", " accept"),
			mtaFrame('L', "Authentication-Results", " other.example; dkim=pass"),
			mtaFrame('N'), mtaFrame('E')), "Occccmmmia"},

		// Events out of order, repeated or unexpected.
		{"EOM before MAIL", after(mtaFrame('E'), mtaFrame('B', "x"), mtaFrame('L', "a", "b")), "Oca"},
		{"RCPT before MAIL", after(mtaFrame('R', "<u@example.com>"), mtaFrame('T'), mtaFrame('N')), "Occc"},
		{"MAIL twice", after(mtaFrame('M', "<x@sender.test>"), mtaFrame('M', "<y@sender.test>"), mtaFrame('R', "<u@example.com>"), mtaFrame('E')), "Occccia"},
		// go-milter aborts the transaction on its own when HELO follows
		// MAIL; the RCPT and EOM then find none.
		{"HELO after MAIL", after(mtaFrame('M', "<x@sender.test>"), mtaFrame('H', "again"), mtaFrame('R', "<u@example.com>"), mtaFrame('E')), "Occca"},
		{"abort twice and body after EOM", after(mailRcpt, mtaFrame('E'), mtaFrame('A'), mtaFrame('A'), mtaRawFrame('B', []byte("late")), mtaFrame('E')), "Occciaa"},
		{"CONNECT twice", after(mtaConnect("other", '4', 2, "198.51.100.1"), mtaFrame('M', "<x@sender.test>")), "Ocyc"},
		{"quit then more", after(mtaFrame('Q'), mtaFrame('M', "<x@sender.test>")), "Oc"},
		{"QUIT_NC reuse", after(mtaFrame('M', "<x@sender.test>"), mtaFrame('K'),
			mtaConnect("second.test", '4', 3, "198.51.100.2"), mtaFrame('K'),
			mtaConnect("third.test", '4', 4, "192.0.2.1"), mtaFrame('H', "third.test"), mailRcpt, mtaFrame('E')),
			"Occycccia"},
		{"unknown SMTP command", after(mtaFrame('U', "XCLIENT NAME=x"), mtaFrame('U')), "Occc"},
		{"macros odd, for an unknown stage, then empty", after(mtaMacros('Z', "i", "X"), mtaMacros('M', "i"), mtaFrame('M', "<x@sender.test>"), mtaRawFrame('D', nil), mtaFrame('E')), "Occ"},
		{"body chunks without DATA", after(mtaFrame('M', "<x@sender.test>"), mtaFrame('R', "<u@example.com>"), mtaRawFrame('B', nil), mtaRawFrame('B', bytes.Repeat([]byte{0}, 300)), mtaFrame('E')), "Occcia"},
	}
}
