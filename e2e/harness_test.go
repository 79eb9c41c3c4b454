package e2e

// What the end-to-end tests need whatever the MTA: the DNS server, the
// mxguard daemon, swaks and its transcript, a small SMTP client, the
// transaction log and the delivered mail. The MTAs are in their own files
// (postfix_test.go, sendmail_test.go), the scenarios in scenarios_test.go.

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/mail"
	"net/textproto"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"text/template"
	"time"

	"github.com/mxguard/mxguard/internal/enginetest"
	"github.com/mxguard/mxguard/internal/testdns"
	"github.com/mxguard/mxguard/logstore"
	"github.com/mxguard/mxguard/scanners/dkim"
	"github.com/mxguard/mxguard/scanners/resolver"
)

// optOutEnv=0 skips the end-to-end tests, for developers without root or
// without the packages. Anything else, or unset, runs them, and then a
// missing MTA or tool is a failure, never a skip: CI must not go green
// without having run them.
const optOutEnv = "MXGUARD_E2E"

// keepEnv=1 keeps the test's directory (configurations, logs, queue,
// Maildir) and prints where it is.
const keepEnv = "MXGUARD_E2E_KEEP"

// waitFor bounds every wait for something asynchronous: a log row, a
// delivery, a log line. Generous, since only a failing test waits it out.
const waitFor = 15 * time.Second

// The world the scenarios live in, shared by mxguard's configuration and
// the MTA's.
var (
	// localDomains are delivered into the Maildir; every other domain is
	// outside (relay).
	localDomains = []string{"example.com", "example.net", "quarantine.test", "spamhold.test"}
	// saslUsers log in over STARTTLS; the password is the name reversed.
	saslUsers = []string{"alice", "bob"}
)

func password(user string) string {
	r := []rune(user)
	for i, j := 0, len(r)-1; i < j; i, j = i+1, j-1 {
		r[i], r[j] = r[j], r[i]
	}
	return string(r) + "-secret"
}

// zone is the DNS mxguard sees. The outside clients are TEST-NET addresses:
// 192.0.2.0/24 may send for pass.test and soft.test, 203.0.113.0/24 and
// 198.51.100.0/24 may not. example.net publishes no SPF record. Where the
// MTA cannot be told a client's address (Sendmail has no XCLIENT), clients
// connect from the loopback twins of those addresses (loopbackTwin), so
// 127.0.2.0/24, the twin of 192.0.2.0/24, may send for the same domains.
// bank.test asks DMARC to reject what does not pass. The public keys of
// mxguard's DKIM signing keys, made for each test, are added (signingKeys).
const zone = `
$TTL 300
pass.test.        IN TXT "v=spf1 ip4:192.0.2.0/24 ip4:127.0.2.0/24 -all"
soft.test.        IN TXT "v=spf1 ip4:192.0.2.0/24 ip4:127.0.2.0/24 ~all"
example.com.      IN TXT "v=spf1 ip4:192.0.2.0/24 ip4:127.0.2.0/24 -all"
bank.test.        IN TXT "v=spf1 -all"
_dmarc.bank.test. IN TXT "v=DMARC1; p=reject"
`

// The test strings of virus and spam engines, assembled from halves so
// that this source file does not look like a virus or spam to a scanner:
// the EICAR test file (the test clamd's only signature, reported as
// eicarSignature) and SpamAssassin's GTUBE (which spamd scores about 1000).
var (
	eicar = `X5O!P%@AP[4\PZX54(P^)7CC)7}$` + `EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*`
	gtube = "XJS*C4JDBQADN1.NSBN3*2IDNEN*" + "GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
)

const eicarSignature = "Eicar-Test-Signature.UNOFFICIAL"

// signingKey is one of mxguard's [[dkim.key]]: generated for each test,
// its public key published in the zone.
type signingKey struct {
	Domain, Selector, Algorithm string
	File                        string // the private key, PEM
}

// signingKeys are the keys mxguard signs our users' mail with: Ed25519
// for example.com (alice's), RSA for example.net, whose 2048-bit
// signature makes a DKIM-Signature field three times as long, for the
// MTAs to fold or not.
var signingKeys = []signingKey{
	{Domain: "example.com", Selector: "e2e", Algorithm: "ed25519"},
	{Domain: "example.net", Selector: "e2e-rsa", Algorithm: "rsa"},
}

// makeSigningKeys writes a private key for each of signingKeys into dir
// and returns the keys with their files, and the zone lines that publish
// their public keys.
func makeSigningKeys(t *testing.T, dir string) ([]signingKey, string) {
	t.Helper()
	var keys []signingKey
	var records strings.Builder
	for _, k := range signingKeys {
		pemBytes, txt, err := dkim.GenerateKey(k.Algorithm, 0)
		if err != nil {
			t.Fatal(err)
		}
		k.File = filepath.Join(dir, k.Domain+"."+k.Selector+".pem")
		if err := os.WriteFile(k.File, pemBytes, 0o600); err != nil {
			t.Fatal(err)
		}
		keys = append(keys, k)
		fmt.Fprintf(&records, "%s. IN TXT %s\n", dkim.RecordName(k.Selector, k.Domain), zoneTXT(txt))
	}
	return keys, records.String()
}

// zoneTXT quotes a TXT record's text for a zone file as strings of at
// most 255 bytes each (RFC 1035 section 3.3.14); a 2048-bit RSA key's
// record is longer than one. The text has no quotes or backslashes.
func zoneTXT(txt string) string {
	var parts []string
	for len(txt) > 255 {
		parts = append(parts, strconv.Quote(txt[:255]))
		txt = txt[255:]
	}
	return strings.Join(append(parts, strconv.Quote(txt)), " ")
}

// loopbackTwin is the loopback address that stands for the TEST-NET
// address ip where a client has to connect from the address the MTA is to
// see: the first octet becomes 127 (192.0.2.1 → 127.0.2.1, 203.0.113.2 →
// 127.0.113.2, 198.51.100.8 → 127.51.100.8). The three TEST-NETs keep
// distinct twins, all of them in 127.0.0.0/8, which Linux routes to lo, and
// none of them 127.0.0.1, the MTA's own.
func loopbackTwin(ip string) string {
	_, rest, _ := strings.Cut(ip, ".")
	return "127." + rest
}

// origin is where a test client comes from, as the MTA and mxguard see it.
type origin struct {
	addr string // the client's address
	// xclient: the client connects from 127.0.0.1 and names addr with
	// XCLIENT (Postfix). Otherwise it connects from addr itself, a
	// loopback address.
	xclient bool
}

// mxguardConfig is mxguard's configuration, filled in with an
// mxguardSettings. The MTA's own loopback connections are trusted; outside
// clients are posed with XCLIENT or come from loopback addresses that are
// not (see origin). The engines are the real clamd and spamd of
// internal/enginetest; spam thresholds are the defaults, except for
// spamhold.test's organisation, which holds spam rather than refusing it.
var mxguardConfig = template.Must(template.New("mxguard.toml").Parse(`hostname = "mx.example.com"

[milter]
listen = {{printf "%q" .Listen}}
check_timeout = "5s"
content_timeout = "30s"
shutdown_timeout = "5s"

[log]
path = {{printf "%q" .DB}}
level = "debug"

[dns]
resolver = {{printf "%q" .DNS}}
timeout = "2s"

[relay]
trusted_networks = [{{printf "%q" .Trusted}}]

[relay.sender_login]
"alice" = ["alice@example.com"]
"bob" = ["bob@example.com"]

[spf]
fail = "reject"
softfail = "tag"

[virus]
engine = "clamd"
address = {{printf "%q" .Clamd}}
timeout = "20s"

[spam]
engine = "spamd"
address = {{printf "%q" .Spamd}}
timeout = "20s"
{{range .Keys}}
[[dkim.key]]
domain = {{printf "%q" .Domain}}
selector = {{printf "%q" .Selector}}
key_file = {{printf "%q" .File}}
{{end}}
[[organization]]
name = "example"
domains = ["example.com", "example.net"]

[[organization]]
name = "quarantined"
domains = ["quarantine.test"]
[organization.spf]
fail = "quarantine"

[[organization]]
name = "spamhold"
domains = ["spamhold.test"]
[organization.spam]
reject_score = 0.0
`))

// mxguardSettings are the blanks of mxguardConfig.
type mxguardSettings struct {
	Listen, DB, DNS, Trusted string
	Clamd, Spamd             string // the engines' addresses
	Keys                     []signingKey
}

// requireE2E fails the test when it cannot run the way CI runs it, and
// skips it only when the developer opted out.
func requireE2E(t *testing.T, tools ...string) {
	t.Helper()
	if os.Getenv(optOutEnv) == "0" {
		t.Skipf("%s=0: end-to-end tests skipped", optOutEnv)
	}
	if os.Geteuid() != 0 {
		t.Fatalf("the end-to-end tests run a real MTA and must run as root (%s=0 skips them; see e2e/README.md)", optOutEnv)
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed: run scripts/install-deps.sh as root (%s=0 skips these tests)", tool, optOutEnv)
		}
	}
}

// repoRoot is the repository's top directory; tests run in e2e/.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// testDir makes a directory for one MTA phase. Unlike t.TempDir's, it and
// its parent are searchable by everyone: the MTA's unprivileged processes
// read and write below it by absolute path.
func testDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "mxguard-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if os.Getenv(keepEnv) == "1" {
			t.Logf("%s=1: kept %s", keepEnv, dir)
			return
		}
		os.RemoveAll(dir)
	})
	return dir
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
// Ports must be known before the servers start: the MTA's configuration
// names mxguard's, and mxguard restarts on the same one.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// raceBuild is set by race_test.go under -race.
var raceBuild bool

var (
	buildOnce sync.Once
	binDir    string
	binPath   string
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// mxguardBinary builds cmd/mxguard from this tree, once per test binary.
func mxguardBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "mxguard-e2e-bin-")
		if buildErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "mxguard")
		args := []string{"build", "-o", binPath}
		if raceBuild {
			args = append(args, "-race")
		}
		args = append(args, "github.com/mxguard/mxguard/cmd/mxguard")
		out, err := exec.Command(goTool(), args...).CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// goTool finds the go command: on PATH, else where Go is installed here.
func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return "/usr/local/go/bin/go"
}

// phase is what a test sets up before its MTA: a directory, the DNS, the
// engines and mxguard.
type phase struct {
	dir string
	mx  *mxguard
	// resolver looks names up in the test's DNS, as mxguard does.
	resolver *resolver.Resolver
}

// setUp makes the test's directory and signing keys, serves the zone with
// their records, makes sure clamd and spamd run, and starts mxguard
// trusting the network trusted (a CIDR prefix). A missing engine fails the
// test (enginetest).
func setUp(t *testing.T, trusted string) *phase {
	t.Helper()
	dir := testDir(t)
	keys, records := makeSigningKeys(t, dir)
	dns := startDNS(t, zone+records)
	res, err := resolver.New(resolver.Config{Server: dns.Addr(), Timeout: 2 * time.Second, CacheSize: 100})
	if err != nil {
		t.Fatal(err)
	}
	mx := newMxguard(t, dir, mxguardSettings{
		DNS: dns.Addr(), Trusted: trusted,
		Clamd: enginetest.Clamd(t), Spamd: enginetest.Spamd(t),
		Keys: keys,
	})
	return &phase{dir: dir, mx: mx, resolver: res}
}

// startDNS serves zoneText on loopback for the test's lifetime.
func startDNS(t *testing.T, zoneText string) *testdns.Server {
	t.Helper()
	srv, err := testdns.Start(zoneText)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv
}

// mxguard is one "mxguard serve" daemon, which can be stopped and started
// again on the same address and log.
type mxguard struct {
	t      *testing.T
	bin    string
	cfg    string
	db     string
	listen string // "inet:127.0.0.1:PORT", as the MTA's configuration names it
	logf   *os.File

	mu     sync.Mutex
	stderr bytes.Buffer
	cmd    *exec.Cmd
	exited chan error
}

// newMxguard writes the configuration into dir and starts the daemon;
// its listen address and log are filled in.
func newMxguard(t *testing.T, dir string, settings mxguardSettings) *mxguard {
	t.Helper()
	m := &mxguard{
		t:      t,
		bin:    mxguardBinary(t),
		cfg:    filepath.Join(dir, "mxguard.toml"),
		db:     filepath.Join(dir, "mxguard.db"),
		listen: fmt.Sprintf("inet:127.0.0.1:%d", freePort(t)),
	}
	settings.Listen, settings.DB = m.listen, m.db
	var cfg bytes.Buffer
	if err := mxguardConfig.Execute(&cfg, settings); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(m.cfg, cfg.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(filepath.Join(dir, "mxguard.log"))
	if err != nil {
		t.Fatal(err)
	}
	m.logf = f
	t.Cleanup(func() {
		m.kill()
		f.Close()
		if t.Failed() {
			t.Logf("mxguard's log:\n%s", m.log())
		}
	})
	m.start()
	return m
}

var listeningLine = regexp.MustCompile(`msg="mxguard listening" addr=(\S+)`)

// start runs the daemon and waits until it listens.
func (m *mxguard) start() {
	m.t.Helper()
	cmd := exec.Command(m.bin, "serve", "-config", m.cfg)
	pipe, err := cmd.StderrPipe()
	if err != nil {
		m.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		m.t.Fatal(err)
	}
	ready := make(chan struct{}, 1)
	go m.readLog(pipe, ready)
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	m.mu.Lock()
	m.cmd, m.exited = cmd, exited
	m.mu.Unlock()
	select {
	case <-ready:
	case err := <-exited:
		m.t.Fatalf("mxguard exited before listening: %v\n%s", err, m.log())
	case <-time.After(waitFor):
		m.t.Fatalf("mxguard did not listen within %v\n%s", waitFor, m.log())
	}
}

func (m *mxguard) readLog(r io.Reader, ready chan<- struct{}) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text() + "\n"
		m.mu.Lock()
		m.stderr.WriteString(line)
		m.logf.WriteString(line)
		m.mu.Unlock()
		if listeningLine.MatchString(line) {
			ready <- struct{}{}
		}
	}
}

func (m *mxguard) log() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.stderr.String()
}

// stop sends SIGTERM and requires a clean exit, as an init system would.
func (m *mxguard) stop() {
	m.t.Helper()
	m.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-m.exited:
		if err != nil {
			m.t.Fatalf("mxguard's exit after SIGTERM: %v", err)
		}
	case <-time.After(waitFor):
		m.t.Fatalf("mxguard did not stop within %v of SIGTERM", waitFor)
	}
}

// kill ends a daemon that is still running, at the end of the test.
func (m *mxguard) kill() {
	if m.cmd == nil || m.cmd.ProcessState != nil {
		return
	}
	m.cmd.Process.Kill()
	<-m.exited
}

// rows reads the transaction log, oldest first.
func (m *mxguard) rows() ([]logstore.Record, error) {
	st, err := logstore.OpenReadOnly(m.db)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	recs, err := st.Recent(context.Background(), 10000)
	for i, j := 0, len(recs)-1; i < j; i, j = i+1, j-1 {
		recs[i], recs[j] = recs[j], recs[i]
	}
	return recs, err
}

// waitRow waits for the row of the transaction with envelope sender from
// to reach action (a refusal at RCPT is written before the client hears it
// and completed when the connection ends) and returns it.
func (m *mxguard) waitRow(t *testing.T, from, action string) logstore.Record {
	t.Helper()
	var last []logstore.Record
	deadline := time.Now().Add(waitFor)
	for {
		rows, err := m.rows()
		if err != nil {
			t.Fatalf("transaction log: %v", err)
		}
		last = last[:0]
		for _, r := range rows {
			if r.MailFrom == from {
				last = append(last, r)
			}
		}
		if len(last) == 1 && last[0].Action == action && !last[0].EndedAt.IsZero() {
			return last[0]
		}
		if len(last) > 1 || time.Now().After(deadline) {
			t.Fatalf("want one row from <%s> with action %q; have %d:\n%s", from, action, len(last), describeRows(last))
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// noRow requires that nothing was logged for sender from.
func (m *mxguard) noRow(t *testing.T, from string) {
	t.Helper()
	rows, err := m.rows()
	if err != nil {
		t.Fatalf("transaction log: %v", err)
	}
	for _, r := range rows {
		if r.MailFrom == from {
			t.Errorf("want no row from <%s>, have:\n%s", from, describeRows([]logstore.Record{r}))
		}
	}
}

func describeRows(rows []logstore.Record) string {
	var b strings.Builder
	for _, r := range rows {
		fmt.Fprintf(&b, "  %+v\n", r)
	}
	return b.String()
}

// smtpReply is one SMTP reply: "550 5.7.23 SPFFail: ..." is code 550,
// enhanced code 5.7.23 and text "SPFFail: ...". Of a multi-line reply, the
// last line.
type smtpReply struct {
	code, enh, text string
}

func (r smtpReply) String() string {
	return strings.TrimSpace(strings.Join([]string{r.code, r.enh, r.text}, " "))
}

var enhancedCode = regexp.MustCompile(`^[245]\.\d{1,3}\.\d{1,3}$`)

func parseReply(line string) smtpReply {
	code, rest, _ := strings.Cut(strings.TrimSpace(line), " ")
	if len(code) > 3 { // "250-..." continuation line
		code, rest = code[:3], code[4:]+" "+rest
	}
	r := smtpReply{code: code, text: rest}
	if enh, text, _ := strings.Cut(rest, " "); enhancedCode.MatchString(enh) {
		r.enh, r.text = enh, text
	}
	return r
}

// swaksRun is one swaks invocation: how to send, and what came of it.
type swaksRun struct {
	client  string // the outside client's TEST-NET address (see origin); "" is 127.0.0.1, the MTA's own
	helo    string
	from    string
	to      []string
	auth    string   // SASL login over STARTTLS (saslUsers), "" for none
	headers []string // "Name: value" lines added to swaks' message
	body    string   // the message's text; "" is swaks' own
	// attach makes the message multipart/mixed with these files, each
	// base64-encoded as application/octet-stream under its name.
	attach []attachment

	transcript string
	exit       int
	lines      []tline
}

// attachment is a file swaks attaches.
type attachment struct {
	name, content string
}

// tline is one SMTP line of a swaks transcript.
type tline struct {
	server bool
	text   string
}

// Swaks prefixes what it sends with " ->" (" ~>" over TLS; "**>" and "*~>"
// for errors) and what it receives with "<- " ("<~ " over TLS; "<**" and
// "<~*" for error replies), then a blank.
var tlineRE = regexp.MustCompile(`^( ->| ~>|\*\*>|\*~>|<- |<~ |<\*\*|<~\*) (.*)$`)

// swaks runs swaks against the MTA at addr, as a client from o.
func swaks(t *testing.T, addr string, o origin, s swaksRun) *swaksRun {
	t.Helper()
	host, port, _ := net.SplitHostPort(addr)
	args := []string{"--server", host, "--port", port, "--timeout", "30",
		"--helo", s.helo, "--from", s.from, "--to", strings.Join(s.to, ",")}
	switch {
	case o.xclient:
		args = append(args, "--xclient-addr", o.addr)
	case o.addr != "":
		args = append(args, "--local-interface", o.addr)
	}
	if s.auth != "" {
		args = append(args, "--tls", "--auth", "PLAIN", "--auth-user", s.auth, "--auth-password", password(s.auth))
	}
	for _, h := range s.headers {
		args = append(args, "--header", h)
	}
	if s.body != "" {
		args = append(args, "--body", s.body)
	}
	if len(s.attach) > 0 {
		dir := t.TempDir()
		for _, a := range s.attach {
			path := filepath.Join(dir, a.name)
			if err := os.WriteFile(path, []byte(a.content), 0o644); err != nil {
				t.Fatal(err)
			}
			// "@": the file's content, attached under its name.
			args = append(args, "--attach", "@"+path)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "swaks", args...).CombinedOutput()
	s.transcript = string(out)
	if ee, ok := err.(*exec.ExitError); ok {
		s.exit = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("swaks: %v", err)
	}
	for _, l := range strings.Split(s.transcript, "\n") {
		if m := tlineRE.FindStringSubmatch(strings.TrimRight(l, "\r")); m != nil {
			s.lines = append(s.lines, tline{server: strings.HasPrefix(m[1], "<"), text: strings.TrimSpace(m[2])})
		}
	}
	return &s
}

// reply returns the server's reply to the last command that starts with
// cmd ("MAIL FROM", "RCPT TO", "." for the end of DATA).
func (s *swaksRun) reply(cmd string) (smtpReply, bool) {
	at := -1
	for i, l := range s.lines {
		if !l.server && (l.text == cmd || cmd != "." && strings.HasPrefix(strings.ToUpper(l.text), cmd)) {
			at = i
		}
	}
	if at < 0 {
		return smtpReply{}, false
	}
	for _, l := range s.lines[at+1:] {
		if !l.server {
			break
		}
		if len(l.text) < 4 || l.text[3] != '-' {
			return parseReply(l.text), true
		}
	}
	return smtpReply{}, false
}

// smtpClient is a minimal SMTP client for what swaks cannot script: two
// transactions on one connection, or a connection that drops mid-DATA.
type smtpClient struct {
	t *testing.T
	c *textproto.Conn
}

// dialSMTP connects to addr as a client from o and says EHLO. With
// XCLIENT the MTA then greets anew and wants EHLO again.
func dialSMTP(t *testing.T, addr string, o origin, helo string) *smtpClient {
	t.Helper()
	d := net.Dialer{Timeout: waitFor}
	if !o.xclient && o.addr != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(o.addr)}
	}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(time.Minute))
	s := &smtpClient{t: t, c: textproto.NewConn(conn)}
	t.Cleanup(func() { s.c.Close() })
	s.expect(s.read(), "220")
	s.expect(s.cmd("EHLO %s", helo), "250")
	if o.xclient {
		s.expect(s.cmd("XCLIENT ADDR=%s", o.addr), "220")
		s.expect(s.cmd("EHLO %s", helo), "250")
	}
	return s
}

func (s *smtpClient) read() smtpReply {
	s.t.Helper()
	code, msg, err := s.c.ReadResponse(0)
	if err != nil {
		s.t.Fatalf("SMTP reply: %v", err)
	}
	lines := strings.Split(msg, "\n")
	return parseReply(strconv.Itoa(code) + " " + lines[len(lines)-1])
}

// cmd sends one command and returns the reply.
func (s *smtpClient) cmd(format string, args ...any) smtpReply {
	s.t.Helper()
	if err := s.c.PrintfLine(format, args...); err != nil {
		s.t.Fatalf("SMTP %s: %v", fmt.Sprintf(format, args...), err)
	}
	return s.read()
}

func (s *smtpClient) expect(r smtpReply, code string) {
	s.t.Helper()
	if r.code != code {
		s.t.Fatalf("SMTP reply %q; want %s", r, code)
	}
}

// data sends DATA and the message and returns the reply to its end.
func (s *smtpClient) data(msg string) smtpReply {
	s.t.Helper()
	s.expect(s.cmd("DATA"), "354")
	w := s.c.DotWriter()
	io.WriteString(w, msg)
	if err := w.Close(); err != nil {
		s.t.Fatal(err)
	}
	return s.read()
}

// message is a small RFC 5322 message carrying the test's token.
func message(from, to, token string) string {
	return fmt.Sprintf("From: <%s>\nTo: <%s>\nSubject: e2e %s\nMessage-ID: <%s@e2e.test>\nX-E2E-ID: %s\n\nHello from %s.\n",
		from, to, token, token, token, token)
}

// delivery is a message found in the mailbox.
type delivery struct {
	path   string
	header mail.Header
	// fields are the header fields as delivered, in order, unfolded and
	// unparsed ("Name: value"), to check order and exact form.
	fields []string
}

// readDelivery reads a message file.
func readDelivery(path string) (delivery, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return delivery{}, err
	}
	msg, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		return delivery{}, fmt.Errorf("%s: %v", path, err)
	}
	head, _, _ := bytes.Cut(raw, []byte("\n\n"))
	var fields []string
	for _, l := range strings.Split(string(head), "\n") {
		if (strings.HasPrefix(l, " ") || strings.HasPrefix(l, "\t")) && len(fields) > 0 {
			fields[len(fields)-1] += " " + strings.TrimSpace(l)
			continue
		}
		fields = append(fields, l)
	}
	return delivery{path: path, header: msg.Header, fields: fields}, nil
}

// deliveries returns every message delivered into mailbox (a glob of
// complete message files) by its X-E2E-ID.
func deliveries(t *testing.T, mailbox string) map[string][]delivery {
	t.Helper()
	files, err := filepath.Glob(mailbox)
	if err != nil {
		t.Fatal(err)
	}
	byToken := map[string][]delivery{}
	for _, f := range files {
		d, err := readDelivery(f)
		if err != nil {
			t.Fatal(err)
		}
		tok := d.header.Get("X-E2E-ID")
		byToken[tok] = append(byToken[tok], d)
	}
	return byToken
}

// waitDelivery waits until the message with token is in mailbox.
func waitDelivery(t *testing.T, mailbox, token string) delivery {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for {
		if ds := deliveries(t, mailbox)[token]; len(ds) > 0 {
			if len(ds) > 1 {
				t.Fatalf("message %s delivered %d times", token, len(ds))
			}
			return ds[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("message %s not delivered into %s within %v", token, mailbox, waitFor)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// field returns the first header field named name as delivered
// ("Name: value") and its position, or -1.
func (d delivery) field(name string) (string, int) {
	for i, f := range d.fields {
		if n, _, ok := strings.Cut(f, ":"); ok && strings.EqualFold(n, name) {
			return f, i
		}
	}
	return "", -1
}

// waitLog waits until re matches the text log returns.
func waitLog(t *testing.T, what string, log func() string, re *regexp.Regexp) []string {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for {
		if m := re.FindStringSubmatch(log()); m != nil {
			return m
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no line matching %q within %v", what, re, waitFor)
		}
		time.Sleep(25 * time.Millisecond)
	}
}
