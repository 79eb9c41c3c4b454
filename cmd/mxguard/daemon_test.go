package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/d--j/go-milter"

	"github.com/mxguard/mxguard/internal/testdns"
	"github.com/mxguard/mxguard/logstore"
)

// The tests start the real daemon: the test binary runs itself as
// "mxguard serve" when this variable is set, so what runs is main's code,
// in its own process, listening on loopback.
const runMainEnv = "MXGUARD_TEST_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(runMainEnv) == "1" {
		os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// testZone is the DNS the daemon sees in these tests.
const testZone = `
$TTL 300
sender.test.   IN TXT "v=spf1 ip4:192.0.2.1 -all"
soft.test.     IN TXT "v=spf1 ip4:192.0.2.1 ~all"
example.com.   IN TXT "v=spf1 ip4:192.0.2.10 -all"
;! servfail temp.test.
`

// daemon is one "mxguard serve" process started by a test.
type daemon struct {
	t      *testing.T
	cmd    *exec.Cmd
	addr   string // milter address (host:port)
	db     string
	dns    *testdns.Server
	mu     sync.Mutex
	stderr strings.Builder
	exited chan error
}

// startDaemon writes a configuration (milterKeys go into [milter], extra is
// appended), starts the daemon and waits until it listens.
func startDaemon(t *testing.T, milterKeys, extra string) *daemon {
	t.Helper()
	dns, err := testdns.Start(testZone)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dns.Close() })
	dir := t.TempDir()
	d := &daemon{t: t, db: filepath.Join(dir, "log", "mxguard.db"), dns: dns, exited: make(chan error, 1)}
	cfg := fmt.Sprintf(`hostname = "mx.example.com"
[milter]
check_timeout = "3s"
%s
[log]
path = %q
level = "debug"
[dns]
resolver = %q
timeout = "1s"
[relay]
trusted_networks = ["127.0.0.0/8"]
block_networks = ["198.51.100.0/24"]
[relay.sender_login]
"alice" = ["alice@example.com"]
[[organization]]
name = "example"
domains = ["example.com", "example.net"]
%s`, milterKeys, d.db, dns.Addr(), extra)
	cfgPath := filepath.Join(dir, "mxguard.toml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	d.cmd = exec.Command(os.Args[0], "serve", "-config", cfgPath)
	d.cmd.Env = append(os.Environ(), runMainEnv+"=1")
	pipe, err := d.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan string, 1)
	go d.readLog(pipe, ready)
	go func() { d.exited <- d.cmd.Wait() }()
	t.Cleanup(func() {
		if d.cmd.ProcessState == nil {
			d.cmd.Process.Kill()
			<-d.exited
		}
		if t.Failed() {
			t.Logf("daemon log:\n%s", d.log())
		}
	})
	select {
	case d.addr = <-ready:
	case err := <-d.exited:
		t.Fatalf("daemon exited before listening: %v\n%s", err, d.log())
	case <-time.After(20 * time.Second):
		t.Fatalf("daemon did not listen within 20s\n%s", d.log())
	}
	return d
}

var listeningLine = regexp.MustCompile(`msg="mxguard listening" addr=(\S+)`)

func (d *daemon) readLog(r io.Reader, ready chan<- string) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		d.mu.Lock()
		d.stderr.WriteString(line + "\n")
		d.mu.Unlock()
		if m := listeningLine.FindStringSubmatch(line); m != nil {
			ready <- m[1]
		}
	}
}

func (d *daemon) network() string {
	if strings.HasPrefix(d.addr, "/") {
		return "unix"
	}
	return "tcp"
}

func (d *daemon) log() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.stderr.String()
}

// stop sends SIGTERM and requires a clean exit.
func (d *daemon) stop() {
	d.t.Helper()
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-d.exited:
		if err != nil {
			d.t.Fatalf("daemon exit after SIGTERM: %v", err)
		}
	case <-time.After(20 * time.Second):
		d.t.Fatal("daemon did not stop within 20s of SIGTERM")
	}
}

// rows reads the transaction log, oldest first.
func (d *daemon) rows() []logstore.Record {
	d.t.Helper()
	st, err := logstore.OpenReadOnly(d.db)
	if err != nil {
		d.t.Fatal(err)
	}
	defer st.Close()
	recs, err := st.Recent(context.Background(), 1000)
	if err != nil {
		d.t.Fatal(err)
	}
	for i, j := 0, len(recs)-1; i < j; i, j = i+1, j-1 {
		recs[i], recs[j] = recs[j], recs[i]
	}
	return recs
}

// lastRow waits for the newest row to reach a final action (rows of
// connections are written when the MTA closes them) and returns it.
func (d *daemon) lastRow(want int) logstore.Record {
	d.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		rows := d.rows()
		if len(rows) >= want {
			return rows[len(rows)-1]
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("want %d rows, have %d: %+v", want, len(rows), rows)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// mta plays the MTA side of one SMTP connection, as Postfix does.
type mta struct {
	t      *testing.T
	macros *milter.MacroBag
	s      *milter.ClientSession
}

func (d *daemon) connect(t *testing.T, clientIP string, opts ...milter.Option) *mta {
	t.Helper()
	macros := milter.NewMacroBag()
	macros.Set(milter.MacroMTAFQDN, "mta.example.com")
	macros.Set(milter.MacroDaemonName, "smtpd")
	opts = append([]milter.Option{milter.WithAction(milter.AllClientSupportedActionMasks)}, opts...)
	s, err := milter.NewClient(d.network(), d.addr, opts...).Session(macros)
	if err != nil {
		t.Fatalf("milter session: %v", err)
	}
	m := &mta{t: t, macros: macros, s: s}
	t.Cleanup(func() { s.Close() })
	m.step("connect", must(s.Conn("client.test", milter.FamilyInet, 40000, clientIP)))
	m.step("helo", must(s.Helo("client.sender.test")))
	return m
}

func must(a *milter.Action, err error) *milter.Action {
	if err != nil {
		return &milter.Action{Type: -1, SMTPReply: "error: " + err.Error()}
	}
	return a
}

// step requires that the milter let the MTA go on.
func (m *mta) step(what string, a *milter.Action) {
	m.t.Helper()
	if a.Type != milter.ActionContinue {
		m.t.Fatalf("%s: got %v %q; want continue", what, a, a.SMTPReply)
	}
}

// refused requires a refusal whose reply starts with want.
func (m *mta) refused(what string, a *milter.Action, want string) {
	m.t.Helper()
	if !a.StopProcessing() || !strings.HasPrefix(a.SMTPReply, want) {
		m.t.Fatalf("%s: got %v (%q); want a refusal %q", what, a, a.SMTPReply, want)
	}
}

// message sends DATA, the header and body, and returns the end-of-message answer.
func (m *mta) message(queueID string, headers [][2]string, body string) ([]milter.ModifyAction, *milter.Action) {
	m.t.Helper()
	m.macros.Set(milter.MacroQueueId, queueID)
	m.step("data", must(m.s.DataStart()))
	for _, h := range headers {
		m.step("header "+h[0], must(m.s.HeaderField(h[0], h[1], nil)))
	}
	m.step("eoh", must(m.s.HeaderEnd()))
	mods, act, err := m.s.BodyReadFrom(strings.NewReader(body))
	if err != nil {
		m.t.Fatalf("body/eom: %v", err)
	}
	return mods, act
}
