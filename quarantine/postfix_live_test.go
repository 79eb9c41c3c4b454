package quarantine

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The private, unpacked copy of Debian's postfix package that
// scripts/install-deps.sh provides for the end-to-end tests (see
// e2e/README.md); MXGUARD_E2E=0 is the developers' way to skip the tests
// that need it. In CI a missing Postfix is a failure, not a skip.
const (
	optOutEnv   = "MXGUARD_E2E"
	postfixRoot = "/var/cache/mxguard/postfix"
)

// TestPostfixLive drives a real, private Postfix instance: its own
// configuration, queue and data directories in a temporary directory, no
// network listener, header_checks holding every message whose subject
// starts with HOLDME, and every delivery discarded. The system's Postfix,
// if any, is not touched.
func TestPostfixLive(t *testing.T) {
	if os.Getenv(optOutEnv) == "0" {
		t.Skipf("%s=0: tests that run a real Postfix are skipped", optOutEnv)
	}
	if os.Geteuid() != 0 {
		t.Fatalf("needs root (postfix start, postsuper); %s=0 skips it", optOutEnv)
	}
	root := os.Getenv("POSTFIX_ROOT")
	if root == "" {
		root = postfixRoot
	}
	if _, err := os.Stat(filepath.Join(root, "usr/sbin/postsuper")); err != nil {
		t.Fatalf("no private Postfix at %s: run scripts/install-deps.sh as root (%s=0 skips this test)", root, optOutEnv)
	}
	libdir := filepath.Join(root, "usr/lib/postfix")
	t.Setenv("PATH", filepath.Join(root, "usr/sbin")+":"+os.Getenv("PATH"))
	t.Setenv("LD_LIBRARY_PATH", libdir)
	pf, err := user.Lookup("postfix")
	if err != nil {
		t.Skip("no postfix user")
	}
	uid, _ := strconv.Atoi(pf.Uid)

	// Postfix's daemons run as "postfix" and must reach the queue, so not
	// t.TempDir (mode 0700).
	dir, err := os.MkdirTemp("", "mxguard-postfix-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	for _, d := range []string{"etc", "spool", "data"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	os.Chmod(dir, 0o755)
	os.Chown(filepath.Join(dir, "data"), uid, -1)
	conf := filepath.Join(dir, "etc")
	write := func(name, text string) {
		if err := os.WriteFile(filepath.Join(conf, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("main.cf", fmt.Sprintf(`compatibility_level = 3.6
daemon_directory = %[2]s/sbin
command_directory = %[3]s/usr/sbin
shlib_directory = %[2]s
meta_directory = %[3]s/etc/postfix
import_environment = MAIL_CONFIG MAIL_DEBUG MAIL_LOGTAG TZ LANG=C POSTLOG_SERVICE POSTLOG_HOSTNAME LD_LIBRARY_PATH=%[2]s
# sendmail starts postdrop with export_environment only: the private
# copy's libraries must be named there too
export_environment = TZ MAIL_CONFIG LANG LD_LIBRARY_PATH=%[2]s
queue_directory = %[1]s/spool
data_directory = %[1]s/data
myhostname = mx.example.test
mydomain = example.test
inet_interfaces = loopback-only
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
default_transport = discard
smtp_dns_support_level = disabled
maillog_file = %[1]s/maillog
maillog_file_prefixes = %[1]s
header_checks = regexp:%[1]s/etc/header_checks
`, dir, libdir, root))
	write("header_checks", "/^Subject: HOLDME/ HOLD held by the test\n")
	// Unix services only: nothing listens on the network.
	write("master.cf", `pickup    unix  n - n 60    1 pickup
cleanup   unix  n - n -     0 cleanup
qmgr      unix  n - n 300   1 qmgr
rewrite   unix  - - n -     - trivial-rewrite
bounce    unix  - - n -     0 bounce
defer     unix  - - n -     0 bounce
trace     unix  - - n -     0 bounce
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n -     - proxymap
showq     unix  n - n -     - showq
error     unix  - - n -     - error
retry     unix  - - n -     - error
discard   unix  - - n -     - discard
postlog   unix-dgram n - n - 1 postlogd
`)
	postfix := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("postfix", append([]string{"-c", conf}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("postfix %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	postfix("check")
	postfix("start")
	running := true
	t.Cleanup(func() {
		if running {
			exec.Command("postfix", "-c", conf, "stop").Run()
		}
	})
	defer func() {
		if t.Failed() {
			log, _ := os.ReadFile(filepath.Join(dir, "maillog"))
			t.Logf("maillog:\n%s", log)
		}
	}()

	submit := func(subject string) {
		t.Helper()
		cmd := exec.Command("sendmail", "-C", conf, "-f", "sender@example.org", "rcpt@example.test", "other@example.test")
		cmd.Stdin = strings.NewReader("From: sender@example.org\nSubject: " + subject + "\n\nbody\n")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("sendmail: %v\n%s", err, out)
		}
	}
	p := &Postfix{ConfigDir: conf}
	waitHeld := func(n int) []Message {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for {
			held, err := p.Held(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if len(held) == n {
				return held
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d messages held, want %d: %+v", len(held), n, held)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	start := time.Now().Add(-time.Second)
	submit("HOLDME one")
	submit("HOLDME two")
	submit("HOLDME three")
	submit("delivered")
	held := waitHeld(3)
	for _, m := range held {
		if !ValidQueueID(m.QueueID) || m.Sender != "sender@example.org" || len(m.Recipients) != 2 ||
			m.Arrival.Before(start.Truncate(time.Second)) || m.Size == 0 {
			t.Errorf("held message %+v", m)
		}
	}

	if err := p.Release(t.Context(), held[0].QueueID); err != nil {
		t.Fatalf("Release: %v", err)
	}
	if err := p.Delete(t.Context(), held[1].QueueID); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	waitHeld(1)
	for _, id := range []string{held[0].QueueID, held[1].QueueID} {
		if err := p.Release(t.Context(), id); !errors.Is(err, ErrNotHeld) {
			t.Errorf("Release of %s again: %v; want ErrNotHeld", id, err)
		}
		if err := p.Delete(t.Context(), id); !errors.Is(err, ErrNotHeld) {
			t.Errorf("Delete of %s again: %v; want ErrNotHeld", id, err)
		}
	}

	// Postfix stopped: the queue is still listed (postqueue reads it
	// directly), and a release still releases, but cannot be scheduled.
	postfix("stop")
	running = false
	last := waitHeld(1)[0].QueueID
	if err := p.Release(t.Context(), last); !errors.Is(err, ErrNotScheduled) {
		t.Errorf("Release with Postfix stopped: %v; want ErrNotScheduled", err)
	}
	waitHeld(0)
}
