package e2e

// Postfix: Debian's postfix 3.7, run by scripts/postfix-instance.sh as a
// throwaway instance from a private unpacked copy of the package (see
// README.md), with mxguard as its smtpd milter.

import (
	"encoding/json"
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

// TestPostfix runs the scenarios through a real Postfix.
func TestPostfix(t *testing.T) {
	requireE2E(t, "swaks", "saslpasswd2", "openssl", "setpriv")
	start := time.Now()
	// 127.0.0.0/8: Postfix's own connections, and the XCLIENT sessions'
	// loopback origin; outside clients are the addresses XCLIENT names.
	ph := setUp(t, "127.0.0.0/8")
	pf := startPostfix(t, filepath.Join(ph.dir, "postfix"), ph.mx.listen)
	t.Logf("setup (mxguard build, keys, DNS, engines, mxguard, Postfix instance): %v", time.Since(start).Round(time.Millisecond))

	start = time.Now()
	runScenarios(t, &env{mta: pf, mx: ph.mx, resolver: ph.resolver})
	t.Logf("scenarios: %v", time.Since(start).Round(time.Millisecond))
}

// postfix is one instance made by scripts/postfix-instance.sh.
type postfix struct {
	t      *testing.T
	script string
	dir    string
	port   int
}

func startPostfix(t *testing.T, dir, milter string) *postfix {
	t.Helper()
	p := &postfix{t: t, script: filepath.Join(repoRoot(t), "scripts", "postfix-instance.sh"), dir: dir, port: freePort(t)}
	args := []string{"create", dir, "--port", strconv.Itoa(p.port), "--milter", milter,
		"--hostname", "mx.example.com", "--domains", strings.Join(localDomains, " ")}
	for _, u := range saslUsers {
		args = append(args, "--user", u+":"+password(u))
	}
	p.script1(args...)
	t.Cleanup(func() {
		if out, err := exec.Command(p.script, "stop", dir).CombinedOutput(); err != nil {
			t.Errorf("stopping Postfix: %v\n%s", err, out)
		}
		if t.Failed() {
			t.Logf("Postfix's log %s:\n%s", filepath.Join(dir, "maillog"), p.logText())
		}
	})
	p.script1("start", dir)
	return p
}

// script1 runs postfix-instance.sh and returns its standard output.
func (p *postfix) script1(args ...string) string {
	p.t.Helper()
	cmd := exec.Command(p.script, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		p.t.Fatalf("postfix-instance.sh %s: %v\n%s%s", strings.Join(args, " "), err, out, stderr.String())
	}
	return string(out)
}

// run runs one of the instance's commands (postqueue, postsuper, postcat).
func (p *postfix) run(args ...string) string {
	p.t.Helper()
	return p.script1(append([]string{"run", p.dir}, args...)...)
}

func (p *postfix) smtpAddr() string { return fmt.Sprintf("127.0.0.1:%d", p.port) }

// mailbox: virtual(8) delivers into one Maildir, whose new/ holds only
// complete messages.
func (p *postfix) mailbox() string { return filepath.Join(p.dir, "mail", "inbox", "new", "*") }

// client: Postfix honours XCLIENT from loopback (smtpd_authorized_xclient_hosts).
func (p *postfix) client(ip string) origin {
	if ip == "" {
		return origin{addr: "127.0.0.1"}
	}
	return origin{addr: ip, xclient: true}
}

// milterReply: Postfix passes a milter's reply on as it is.
func (p *postfix) milterReply(r smtpReply) smtpReply { return r }

// ownSessions: with XCLIENT, Postfix's smtpd opens a milter session for the
// loopback connection and a new one for the client XCLIENT names.
func (p *postfix) ownSessions() bool { return true }

func (p *postfix) logText() string {
	b, _ := os.ReadFile(filepath.Join(p.dir, "maillog"))
	return string(b)
}

var postfixQueued = regexp.MustCompile(`^Ok: queued as ([0-9A-Za-z]+)$`)

// queueID: "250 2.0.0 Ok: queued as 3733E988611".
func (p *postfix) queueID(r smtpReply) string {
	if m := postfixQueued.FindStringSubmatch(r.text); m != nil {
		return m[1]
	}
	return ""
}

// clientQueueID: Postfix logs "QUEUEID: client=NAME[ADDR]" when it opens
// the queue file, after the first accepted RCPT.
func (p *postfix) clientQueueID(t *testing.T, clientIP string) string {
	t.Helper()
	re := regexp.MustCompile(`postfix/smtpd\[\d+\]: ([0-9A-Za-z]+): client=[^\[ ]*\[` + regexp.QuoteMeta(clientIP) + `\]`)
	return waitLog(t, "Postfix's log", p.logText, re)[1]
}

// milterRejected: smtpd logs "NOQUEUE: milter-reject: RCPT from
// unknown[192.0.2.4]: 554 5.7.1 RelayDenied: ...": the refusal came from
// the milter, not from Postfix's own restrictions (which log "reject:").
// At the end of DATA it is cleanup(8) that talks to the milter, and logs
// the refusal with the queue id and without the reply code:
// "5A3309A0206: milter-reject: END-OF-MESSAGE from unknown[192.0.2.15]:
// 5.7.1 Virus: ...".
func (p *postfix) milterRejected(t *testing.T, stage, clientIP string, r smtpReply) {
	t.Helper()
	reply := r.code + " " + r.enh + " " + r.text
	if stage == "." {
		reply = r.enh + " " + r.text
	}
	waitLog(t, "Postfix's log", p.logText, p.milterRejectLine(stage, clientIP, regexp.QuoteMeta(reply)+`; from=<`))
}

// milterRejectLine matches the line Postfix logs when the milter refuses
// clientIP at stage ("MAIL", "RCPT", ".") with a reply matching the
// regular expression reply; its group is the queue id, or NOQUEUE.
func (p *postfix) milterRejectLine(stage, clientIP, reply string) *regexp.Regexp {
	who := `postfix/smtpd\[\d+\]`
	if stage == "." {
		who, stage = `postfix/cleanup\[\d+\]`, "END-OF-MESSAGE"
	}
	return regexp.MustCompile(who + `: ([0-9A-Za-z]+): milter-reject: ` + regexp.QuoteMeta(stage) + ` from [^\[ ]*\[` +
		regexp.QuoteMeta(clientIP) + `\]: ` + reply)
}

// relayed: the message went to its outside recipient, which this instance
// hands to the discard transport.
func (p *postfix) relayed(t *testing.T, queueID string) {
	t.Helper()
	re := regexp.MustCompile(regexp.QuoteMeta(queueID) + `: to=<[^>]+>, relay=none, .*status=sent \(outside domains are discarded`)
	waitLog(t, "Postfix's log", p.logText, re)
}

// queued is one entry of "postqueue -j".
type queued struct {
	QueueName string `json:"queue_name"`
	QueueID   string `json:"queue_id"`
}

func (p *postfix) queue() []queued {
	p.t.Helper()
	var q []queued
	for _, l := range strings.Split(strings.TrimSpace(p.run("postqueue", "-j")), "\n") {
		if l == "" {
			continue
		}
		var e queued
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			p.t.Fatalf("postqueue -j: %v: %q", err, l)
		}
		q = append(q, e)
	}
	return q
}

// held: quarantine is Postfix's hold queue, which keeps no reason. The
// header is the queued message's, as mxguard edited it.
func (p *postfix) held(t *testing.T, queueID string) (mail.Header, string, bool) {
	t.Helper()
	for _, e := range p.queue() {
		if e.QueueID == queueID && e.QueueName == "hold" {
			msg, err := mail.ReadMessage(strings.NewReader(p.run("postcat", "-h", "-q", queueID) + "\n"))
			if err != nil {
				t.Fatalf("postcat -h -q %s: %v", queueID, err)
			}
			return msg.Header, "", true
		}
	}
	return nil, "", false
}

// release delivers a held message, the way docs/config.md tells admins to.
func (p *postfix) release(t *testing.T, queueID string) {
	t.Helper()
	p.run("postsuper", "-H", queueID)
	p.run("postqueue", "-i", queueID)
}

// waitQueueEmpty waits until nothing but held mail is queued: everything
// accepted was delivered, discarded or bounced.
func (p *postfix) waitQueueEmpty(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for {
		var pending []queued
		for _, e := range p.queue() {
			if e.QueueName != "hold" {
				pending = append(pending, e)
			}
		}
		if len(pending) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Postfix still has mail queued after %v: %+v", waitFor, pending)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// milterDown: with milter_default_action = tempfail Postfix answers
// MAIL FROM (not CONNECT or EHLO) with its own 4.7.1 reply.
func (p *postfix) milterDown() (stage string, r smtpReply) {
	return "MAIL FROM", smtpReply{code: "451", enh: "4.7.1", text: "Service unavailable - try again later"}
}

// refusedQueueID: Postfix names a queue id only once it opens the queue
// file, after the first accepted RCPT; refusals before that are NOQUEUE.
// At the end of DATA the message is in the queue file, and the refusal is
// logged with its id (milterRejected).
func (p *postfix) refusedQueueID(t *testing.T, stage, clientIP string) string {
	t.Helper()
	if stage != "." {
		return ""
	}
	return waitLog(t, "Postfix's log", p.logText, p.milterRejectLine(".", clientIP, "[^\n]*"))[1]
}
