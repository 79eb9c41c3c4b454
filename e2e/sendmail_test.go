package e2e

// Sendmail: Debian's sendmail 8.17, run by scripts/sendmail/instance.sh as a
// throwaway instance from a private unpacked copy of the package (see
// scripts/sendmail/README.md), with mxguard as its milter.

import (
	"bufio"
	"fmt"
	"net/mail"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestSendmail runs the scenarios through a real Sendmail.
func TestSendmail(t *testing.T) {
	requireE2E(t, "swaks", "saslpasswd2", "openssl", "m4", "busybox", "unshare", "nsenter")
	// A missing MTA is a failure too, never a skip.
	if out, err := exec.Command(sendmailScript(t), "installed").CombinedOutput(); err != nil {
		t.Fatalf("the private Sendmail copy is not installed: run scripts/install-deps.sh as root (%s=0 skips these tests)\n%s", optOutEnv, out)
	}
	start := time.Now()
	// Only Sendmail's own 127.0.0.1 is trusted: outside clients connect
	// from other loopback addresses (sendmail.client).
	ph := setUp(t, "127.0.0.1/32")
	sm := startSendmail(t, filepath.Join(ph.dir, "sendmail"), ph.mx.listen)
	t.Logf("setup (mxguard build, keys, DNS, engines, mxguard, Sendmail instance): %v", time.Since(start).Round(time.Millisecond))

	start = time.Now()
	runScenarios(t, &env{mta: sm, mx: ph.mx, resolver: ph.resolver})
	t.Logf("scenarios: %v", time.Since(start).Round(time.Millisecond))
}

func sendmailScript(t *testing.T) string {
	t.Helper()
	return filepath.Join(repoRoot(t), "scripts", "sendmail", "instance.sh")
}

// sendmail is one instance made by scripts/sendmail/instance.sh.
type sendmail struct {
	t      *testing.T
	script string
	dir    string // the instance's work dir W
	port   int
}

func startSendmail(t *testing.T, dir, milter string) *sendmail {
	t.Helper()
	s := &sendmail{t: t, script: sendmailScript(t), dir: dir, port: freePort(t)}
	s.script1("setup", dir, strconv.Itoa(s.port), milter)
	t.Cleanup(func() {
		if out, err := s.command("stop", dir).CombinedOutput(); err != nil {
			t.Errorf("stopping Sendmail: %v\n%s", err, out)
		}
		if t.Failed() {
			t.Logf("Sendmail's log %s:\n%s", filepath.Join(dir, "maillog"), s.logText())
		}
	})
	s.script1("start", dir)
	return s
}

// command is instance.sh with args, for an instance like Postfix's: the
// same host name, domains, users and passwords, AUTH only after STARTTLS.
func (s *sendmail) command(args ...string) *exec.Cmd {
	cmd := exec.Command(s.script, args...)
	cmd.Env = append(os.Environ(),
		"SM_HOSTNAME=mx.example.com",
		"SM_DOMAINS="+strings.Join(localDomains, " "),
		"SM_AUTH_TLS_ONLY=1",
	)
	// instance.sh knows the users alice and bob.
	for _, u := range saslUsers {
		cmd.Env = append(cmd.Env, "SM_"+strings.ToUpper(u)+"_PW="+password(u))
	}
	return cmd
}

// script1 runs instance.sh and returns its standard output.
func (s *sendmail) script1(args ...string) string {
	s.t.Helper()
	cmd := s.command(args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		s.t.Fatalf("instance.sh %s: %v\n%s%s", strings.Join(args, " "), err, out, stderr.String())
	}
	return string(out)
}

func (s *sendmail) smtpAddr() string { return fmt.Sprintf("127.0.0.1:%d", s.port) }

// mailbox: the file mailer writes each recipient's copy under a dot name
// and renames it to <time>.<pid>.<recipient>.eml.
func (s *sendmail) mailbox() string { return filepath.Join(s.dir, "mail", "[0-9]*.eml") }

func (s *sendmail) logText() string {
	b, _ := os.ReadFile(filepath.Join(s.dir, "maillog"))
	return string(b)
}

// client: Sendmail has no XCLIENT, so an outside client connects from the
// loopback twin of its address; only 127.0.0.1 is in trusted_networks.
func (s *sendmail) client(ip string) origin {
	if ip == "" {
		return origin{addr: "127.0.0.1"}
	}
	return origin{addr: loopbackTwin(ip)}
}

// ownSessions: Sendmail opens one milter session per SMTP connection.
func (s *sendmail) ownSessions() bool { return false }

var sendmailQueued = regexp.MustCompile(`^([0-9A-Za-z]+) Message accepted for delivery$`)

// queueID: "250 2.0.0 6AN46RS4005858 Message accepted for delivery".
func (s *sendmail) queueID(r smtpReply) string {
	if m := sendmailQueued.FindStringSubmatch(r.text); m != nil {
		return m[1]
	}
	return ""
}

var sendmailAddrPrefix = regexp.MustCompile(`^<[^>]*>\.\.\. `)

// milterReply: at MAIL and RCPT Sendmail puts the address in front of a
// milter's text: "553 5.7.1 <bob@example.com>... SenderLoginMismatch: ...".
func (s *sendmail) milterReply(r smtpReply) smtpReply {
	r.text = sendmailAddrPrefix.ReplaceAllString(r.text, "")
	return r
}

// milterDown: with F=T Sendmail tempfails at MAIL FROM while the milter is
// unreachable.
func (s *sendmail) milterDown() (stage string, r smtpReply) {
	return "MAIL FROM", smtpReply{code: "451", enh: "4.3.2", text: "Please try again later"}
}

// loggedQueueID is the queue id of the transaction of clientIP, from
// the line Sendmail logs when a transaction ends, however it ended:
// "6AN4RIBI014183: from=<a@pass.test>, size=0, ..., relay=[127.0.2.4]".
// Every scenario's client has its own address; the transaction must be
// its only one.
func (s *sendmail) loggedQueueID(t *testing.T, clientIP string) string {
	t.Helper()
	re := regexp.MustCompile(`(?m)sendmail\[\d+\]: ([0-9A-Za-z]+): from=<[^>]*>, .*, relay=(?:\S+ )?\[` +
		regexp.QuoteMeta(clientIP) + `\]$`)
	waitLog(t, "Sendmail's log", s.logText, re)
	if m := re.FindAllStringSubmatch(s.logText(), -1); len(m) != 1 {
		t.Fatalf("Sendmail logged %d transactions of %s; want 1: %q", len(m), clientIP, m)
	}
	return re.FindStringSubmatch(s.logText())[1]
}

// refusedQueueID: Sendmail assigns the queue id at MAIL FROM (it is the
// milter's i macro from then on) and logs it for a refused transaction too.
func (s *sendmail) refusedQueueID(t *testing.T, stage, clientIP string) string {
	t.Helper()
	return s.loggedQueueID(t, clientIP)
}

// clientQueueID: for a client that left mid-DATA Sendmail logs
// "collect: premature EOM" and then the transaction's from= line.
func (s *sendmail) clientQueueID(t *testing.T, clientIP string) string {
	t.Helper()
	return s.loggedQueueID(t, clientIP)
}

// milterRejected: "6AN4RIBI014183: Milter: to=<victim@elsewhere.test>,
// reject=554 5.7.1 RelayDenied: ..." (from=<...> at MAIL): the refusal
// came from the milter, not from Sendmail's own rulesets (which log
// "ruleset=check_rcpt, ..., reject=...").
func (s *sendmail) milterRejected(t *testing.T, stage, clientIP string, r smtpReply) {
	t.Helper()
	qid := s.loggedQueueID(t, clientIP)
	arg := map[string]string{"MAIL": "from=<[^>]*>", "RCPT": "to=<[^>]*>", ".": "data"}[stage]
	if arg == "" {
		t.Fatalf("milterRejected: no Sendmail log line for stage %q", stage)
	}
	re := regexp.MustCompile(regexp.QuoteMeta(qid) + `: Milter: ` + arg + `, reject=` +
		regexp.QuoteMeta(s.milterReply(r).String()) + `\n`)
	waitLog(t, "Sendmail's log", s.logText, re)
}

// relayed: the message went to its outside recipient, which this instance
// writes into outbound/ with the file mailer. Sendmail has delivered it
// when the client gets its 250 (DeliveryMode=interactive).
func (s *sendmail) relayed(t *testing.T, queueID string) {
	t.Helper()
	re := regexp.MustCompile(regexp.QuoteMeta(queueID) + `: to=<[^>]+>, .*, mailer=file, .*, relay=outbound, dsn=2\.0\.0, stat=Sent\n`)
	waitLog(t, "Sendmail's log", s.logText, re)
}

// smQueued is one entry of "mailq": queue id and quarantine reason.
type smQueued struct {
	id, quarantine string
}

// mailqEntry starts an entry: "6AN4RJA1014207       25 Mon Nov 23 04:27
// <sender>" (a status mark may follow the id: * running, X too large, -
// locked). The listing ends with "Total requests: N".
var (
	mailqEntry      = regexp.MustCompile(`^([0-9A-Za-z]+)[*X-]?\s+\d+ `)
	mailqQuarantine = regexp.MustCompile(`^\s+QUARANTINE: (.*)$`)
	mailqTotal      = regexp.MustCompile(`^\s+Total requests: (\d+)$`)
)

// queue lists the queue with the instance's mailq; with "-qQ" the
// quarantine.
func (s *sendmail) queue(args ...string) []smQueued {
	s.t.Helper()
	out := s.script1(append([]string{"mailq", s.dir}, args...)...)
	var q []smQueued
	total := -1
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		if m := mailqEntry.FindStringSubmatch(sc.Text()); m != nil {
			q = append(q, smQueued{id: m[1]})
		} else if m := mailqQuarantine.FindStringSubmatch(sc.Text()); m != nil && len(q) > 0 {
			q[len(q)-1].quarantine = m[1]
		} else if m := mailqTotal.FindStringSubmatch(sc.Text()); m != nil {
			total, _ = strconv.Atoi(m[1])
		}
	}
	// An entry this parser missed would look like an empty queue.
	if total != len(q) {
		s.t.Fatalf("mailq %s: read %d entries, it says %d:\n%s", strings.Join(args, " "), len(q), total, out)
	}
	return q
}

// held: a quarantined message is an hf queue file, listed by "mailq -qQ"
// with its reason. The header is read from that file, as mxguard edited it.
func (s *sendmail) held(t *testing.T, queueID string) (mail.Header, string, bool) {
	t.Helper()
	for _, e := range s.queue("-qQ") {
		if e.id != queueID {
			continue
		}
		if e.quarantine == "" {
			t.Fatalf("mailq -qQ lists %s without its QUARANTINE reason", queueID)
		}
		return s.queuedHeader(t, filepath.Join(s.dir, "mqueue", "hf"+queueID)), e.quarantine, true
	}
	return nil, "", false
}

// queuedHeader reads the header of a queue control file (qf or hf): each
// field is a line "H?flags?Name: value" (the ?flags? are optional),
// continued on lines that start with a blank.
func (s *sendmail) queuedHeader(t *testing.T, path string) mail.Header {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var head strings.Builder
	inHeader := false
	for _, l := range strings.Split(string(b), "\n") {
		switch {
		case strings.HasPrefix(l, "H"):
			l = l[1:]
			if strings.HasPrefix(l, "?") {
				if _, rest, ok := strings.Cut(l[1:], "?"); ok {
					l = rest
				}
			}
			head.WriteString(l + "\n")
			inHeader = true
		case inHeader && (strings.HasPrefix(l, " ") || strings.HasPrefix(l, "\t")):
			head.WriteString(l + "\n")
		default:
			inHeader = false
		}
	}
	msg, err := mail.ReadMessage(strings.NewReader(head.String() + "\n"))
	if err != nil {
		t.Fatalf("header of %s: %v\n%s", path, err, head.String())
	}
	return msg.Header
}

// release delivers a quarantined message, as an admin would: instance.sh
// runs "sendmail -qQ -Q -qf -qIID" (un-quarantine) and "sendmail -qf
// -qIID" (deliver now), and fails unless it was delivered.
func (s *sendmail) release(t *testing.T, queueID string) {
	t.Helper()
	s.script1("release", s.dir, queueID)
}

// waitQueueEmpty waits until mailq lists nothing: everything accepted was
// delivered or bounced. Quarantined mail is not listed without -qQ.
func (s *sendmail) waitQueueEmpty(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for {
		q := s.queue()
		if len(q) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Sendmail still has mail queued after %v: %+v", waitFor, q)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
