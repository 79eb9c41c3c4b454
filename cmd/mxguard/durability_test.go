package main

// Durability, proved: the promise in milter/session.go, "never accept what
// was not logged", checked against a real "mxguard serve" process.
//
//   - TestSIGKILLLosesNothing kills the daemon under load: every transaction
//     whose final reply reached the client has its row afterwards, and the
//     database is intact.
//   - TestDiskFull and TestLocked make the log unwritable: the client is
//     told 451 4.3.0 (its MTA keeps the mail and retries), the debug log
//     says why, and mail flows and is logged again as soon as the cause is
//     gone, without restarting the daemon.
//   - TestReadOnly shows that a file system cannot be made read-only under
//     the running daemon, and that the daemon refuses to start on one and
//     starts normally once it is writable again.
//
// The disk-full and read-only tests need a small file system of their own.
// They run as root in a private mount and PID namespace (see
// inPrivateNamespace), so the tmpfs is invisible to the rest of the machine
// and disappears with the test, whatever happens to it.

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/d--j/go-milter"

	"github.com/mxguard/mxguard/logstore"
)

// TestSIGKILLLosesNothing runs concurrent transactions through the daemon,
// half accepted at end of message and half refused at RCPT (the two places
// the milter saves a row before it replies), SIGKILLs the daemon in the
// middle, and restarts it on the same database; several times, since a
// reply sent before its commit is lost only if the kill falls between the
// two.
func TestSIGKILLLosesNothing(t *testing.T) {
	const (
		workers   = 16
		maxTrx    = 600
		crashes   = 8
		killAfter = 40 // final replies received between the kills
		maxLoad   = 10 * time.Second
	)
	d := startDaemon(t, tcpListen, "") // [log] synchronous left at its default, "normal"
	trxs := make([]*loadTrx, maxTrx)
	for i := range trxs {
		trxs[i] = newLoadTrx(i)
	}
	var next atomic.Int64
	deadline := time.Now().Add(maxLoad)
	start := time.Now()
	for range crashes {
		killUnderLoad(t, d, trxs, &next, workers, killAfter, deadline)
		// As the crash left it, before a writer recovers the WAL.
		integrityCheck(t, d.db)
		d = restartDaemon(t, d)
	}
	loadTime := time.Since(start)

	var started, replied int
	for _, x := range trxs {
		if x.started {
			started++
		}
		if x.reply == nil {
			continue
		}
		replied++
		// Before a kill every reply must be the expected one; this is
		// what the rows are checked against below.
		if x.accept && x.reply.Type != milter.ActionAccept ||
			!x.accept && (!x.reply.StopProcessing() || !strings.HasPrefix(x.reply.SMTPReply, "554 5.7.1 RelayDenied")) {
			t.Errorf("transaction %d (accept %v) got %v %q", x.n, x.accept, x.reply.Type, x.reply.SMTPReply)
		}
	}

	rows := d.allRows(t)
	byQueue := map[string]logstore.Record{}
	byRcpt := map[string]logstore.Record{}
	for _, r := range rows {
		if r.QueueID != "" {
			byQueue[r.QueueID] = r
		}
		for _, rc := range r.Recipients {
			byRcpt[rc.Address] = r
		}
	}
	var lost, inFlightLogged int
	for _, x := range trxs {
		r, ok := byRcpt[x.rcpt]
		if x.accept {
			r, ok = byQueue[x.queueID]
		}
		if x.reply == nil {
			if ok {
				inFlightLogged++
			}
			continue
		}
		switch {
		case !ok:
			lost++
			if lost <= 10 {
				t.Errorf("transaction %d (queue id %q, rcpt %s) was answered %q but has no row", x.n, x.queueID, x.rcpt, x.reply.SMTPReply)
			}
		case x.accept && (r.Action != "accept" || r.MessageID != x.messageID):
			t.Errorf("transaction %d: row action %q message id %q; want accept %q", x.n, r.Action, r.MessageID, x.messageID)
		case !x.accept && (r.Action != "reject" || r.Reason != "RelayDenied" || r.MailFrom != x.from):
			t.Errorf("transaction %d: row action %q reason %q from %q; want reject RelayDenied %q", x.n, r.Action, r.Reason, r.MailFrom, x.from)
		}
	}
	if lost > 0 {
		t.Errorf("%d of %d answered transactions lost their row", lost, replied)
	}
	t.Logf("%d crashes: %d transactions started, %d answered, %d in flight at a kill (%d of those have a row), %d rows; took %v",
		crashes, started, replied, started-replied, inFlightLogged, len(rows), loadTime.Round(time.Millisecond))

	// The restarted daemon serves new mail and logs it.
	requireAccepted(t, d, "QAFTERKILL")
	d.stop()
	integrityCheck(t, d.db)
}

// killUnderLoad runs the next transactions of trxs from concurrent workers
// and SIGKILLs d when killAfter of them got their final reply; it returns
// once the workers have stopped and d is dead.
func killUnderLoad(t *testing.T, d *daemon, trxs []*loadTrx, next *atomic.Int64, workers, killAfter int, deadline time.Time) {
	t.Helper()
	var (
		replies  atomic.Int64
		killed   atomic.Bool
		killOnce sync.Once
		wg       sync.WaitGroup
	)
	kill := func() {
		killOnce.Do(func() {
			killed.Store(true)
			if err := d.cmd.Process.Kill(); err != nil {
				t.Errorf("SIGKILL: %v", err)
			}
		})
	}
	client := milter.NewClient(d.network(), d.addr, milter.WithAction(milter.AllClientSupportedActionMasks))
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !killed.Load() && time.Now().Before(deadline) {
				n := next.Add(1) - 1
				if n >= int64(len(trxs)) {
					return
				}
				x := trxs[n]
				x.started = true
				x.run(client)
				if x.reply != nil && replies.Add(1) == int64(killAfter) {
					kill()
				}
			}
		}()
	}
	wg.Wait()
	if !killed.Load() {
		t.Fatalf("the load stopped after %d final replies, before the kill at %d (transactions used %d of %d)",
			replies.Load(), killAfter, min(next.Load(), int64(len(trxs))), len(trxs))
	}
	select {
	case <-d.exited:
	case <-time.After(10 * time.Second):
		t.Fatal("the daemon did not die of SIGKILL")
	}
}

// loadTrx is one transaction of the SIGKILL load and what its client saw.
type loadTrx struct {
	n          int
	accept     bool // trusted client, accepted at end of message; else refused at RCPT
	from, rcpt string
	queueID    string // accepted ones only; the refused ones have none
	messageID  string
	started    bool
	reply      *milter.Action // the final reply, if the client got it
}

func newLoadTrx(n int) *loadTrx {
	x := &loadTrx{n: n, accept: n%2 == 0}
	x.from = fmt.Sprintf("k%d@sender.test", n)
	x.rcpt = fmt.Sprintf("k%d@elsewhere.test", n) // not ours: relayed for 127.0.0.1 only
	if x.accept {
		x.from = fmt.Sprintf("k%d@example.com", n)
		x.queueID = fmt.Sprintf("QK%04d", n)
		x.messageID = fmt.Sprintf("<k%d@example.com>", n)
	}
	return x
}

// run plays the MTA for one SMTP connection carrying x, as Postfix would.
// It records the final reply if it arrived, or an earlier one that ended
// the transaction (for the caller to flag); an error, the daemon killed,
// leaves x.reply nil.
func (x *loadTrx) run(c *milter.Client) {
	macros := milter.NewMacroBag()
	macros.Set(milter.MacroMTAFQDN, "mta.example.com")
	macros.Set(milter.MacroDaemonName, "smtpd")
	s, err := c.Session(macros)
	if err != nil {
		return
	}
	defer s.Close()
	ip := "127.0.0.1"
	if !x.accept {
		ip = "192.0.2.1" // SPF pass for sender.test, but not allowed to relay
	}
	cont := func(a *milter.Action, err error) bool {
		if err == nil && a.Type != milter.ActionContinue {
			x.reply = a
		}
		return err == nil && a.Type == milter.ActionContinue
	}
	if !cont(s.Conn("client.test", milter.FamilyInet, 40000, ip)) || !cont(s.Helo("client.test")) || !cont(s.Mail(x.from, "")) {
		return
	}
	if !x.accept {
		if a, err := s.Rcpt(x.rcpt, ""); err == nil {
			x.reply = a
		}
		return
	}
	if !cont(s.Rcpt(x.rcpt, "")) {
		return
	}
	macros.Set(milter.MacroQueueId, x.queueID)
	if !cont(s.DataStart()) {
		return
	}
	for _, h := range [][2]string{{"From", " <" + x.from + ">"}, {"To", " <" + x.rcpt + ">"}, {"Subject", " load"}, {"Message-Id", " " + x.messageID}} {
		if !cont(s.HeaderField(h[0], h[1], nil)) {
			return
		}
	}
	if !cont(s.HeaderEnd()) {
		return
	}
	if _, a, err := s.BodyReadFrom(strings.NewReader("load\r\n")); err == nil {
		x.reply = a
	}
}

// TestDiskFull puts the database on a 2 MiB tmpfs and fills it. SQLite
// goes on committing as long as it can reuse space it already has (a -wal
// file restarted after a checkpoint, free room in a page); each of those
// messages must be accepted with its row. Once a commit needs a new block,
// the save fails and the client must hear 451 4.3.0, not the verdict it
// would have had: both at end of message and for a recipient refused at
// RCPT. Deleting the filler is all it takes for mail to be accepted and
// logged again.
func TestDiskFull(t *testing.T) {
	mnt, child := inPrivateNamespace(t)
	if !child {
		return
	}
	mountTmpfs(t, mnt, "size=2m")
	d := startDaemon(t, tcpListen, "")
	requireAccepted(t, d, "QFULL0")
	requireRelayRefused(t, d, "full0")

	filler := filepath.Join(mnt, "filler")
	fill(t, filler)
	const tries = 300 // messages until the full disk must show
	var failed string
	for i := 1; failed == "" && i <= tries; i++ {
		qid := fmt.Sprintf("QFULL%d", i)
		switch act := d.deliver(t, qid); {
		case act.Type == milter.ActionAccept:
			if r, ok := d.row(t, qid); !ok || r.Action != "accept" {
				t.Fatalf("%s accepted on a full disk; its row: %s", qid, rowText(r, ok))
			}
		case act.StopProcessing() && strings.HasPrefix(act.SMTPReply, "451 4.3.0"):
			if r, ok := d.row(t, qid); ok {
				t.Fatalf("%s was tempfailed but has a row: %+v", qid, r)
			}
			d.waitLog(t, "cannot write the transaction log", "queue_id="+qid, "database or disk is full")
			t.Logf("%s: the first message tempfailed on the full disk; messages logged before it: %d", qid, i-1)
			failed = qid
		default:
			t.Fatalf("%s on a full disk: %v %q; want accept (and its row) or 451 4.3.0", qid, act.Type, act.SMTPReply)
		}
	}
	if failed == "" {
		t.Fatalf("%d messages accepted and logged on a full disk: the test no longer fills it", tries)
	}
	fill(t, filler) // whatever the failed commits or a checkpoint gave back
	var (
		relay    *mta
		relayTag string
	)
	for i := 1; relay == nil && i <= tries; i++ {
		tag := fmt.Sprintf("full%d", i)
		m, act := d.relay(t, tag)
		switch {
		case act.StopProcessing() && strings.HasPrefix(act.SMTPReply, "554 5.7.1 RelayDenied"):
			if r, ok := d.relayRow(t, tag); !ok || r.Action != "reject" {
				t.Fatalf("relay %s refused on a full disk; its row: %s", tag, rowText(r, ok))
			}
			m.s.Close()
		case act.StopProcessing() && strings.HasPrefix(act.SMTPReply, "451 4.3.0"):
			relay, relayTag = m, tag // its transaction ends, and is logged, once the disk is freed
			t.Logf("relay %s: the first RCPT refusal tempfailed; refusals logged before it: %d", tag, i-1)
		default:
			t.Fatalf("relay %s on a full disk: %v %q; want 554 (and its row) or 451 4.3.0", tag, act.Type, act.SMTPReply)
		}
	}
	if relay == nil {
		t.Fatalf("%d relay attempts refused and logged on a full disk: the test no longer fills it", tries)
	}
	t.Logf("the file system is full with a %d KiB filler", size(t, filler)>>10)

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	relay.s.Close()
	requireRelayTempfailLogged(t, d, relayTag, "database or disk is full")
	// The MTA retries: the same queue id, now accepted and logged.
	requireAccepted(t, d, failed)
	requireRelayRefused(t, d, "full-after")
	d.stop()
	integrityCheck(t, d.db)
}

// TestReadOnly: what a read-only file system does to the log.
//
// While the daemon runs, "mount -o remount,ro" cannot happen: SQLite holds
// the database, its WAL and its shared-memory file open for writing, and
// the kernel refuses to remount a file system read-only (EBUSY, "mount
// point is busy") while a file on it is open for writing. The first subtest
// checks that refusal and that mail is still accepted and logged; should
// the remount ever succeed, it requires 451 4.3.0 and recovery instead.
// (Only an emergency remount after an I/O error, such as ext4's
// errors=remount-ro, makes a file system read-only under open files; the
// writes then fail like on a broken disk, with EIO, and the file system
// must be unmounted and checked, which means stopping mxguard anyway.)
//
// The read-only case a daemon really meets is a start on a file system
// that is read-only already: it must not serve without its log, must say
// so, and must start and find its rows once the file system is writable.
func TestReadOnly(t *testing.T) {
	mnt, child := inPrivateNamespace(t)
	if !child {
		return
	}
	mountTmpfs(t, mnt, "size=4m")
	d := startDaemon(t, tcpListen, "")
	t.Cleanup(func() { remount(mnt, "rw") }) // before the directories are removed
	requireAccepted(t, d, "QRO0")

	t.Run("remount refused while the daemon runs", func(t *testing.T) {
		err := remount(mnt, "ro")
		if err == nil {
			// Then the log cannot be written (with which error, SQLite
			// decides), and writable again it must be used again.
			t.Logf("remount,ro succeeded under a running daemon")
			relay := requireRelayTempfail(t, d, "ro1")
			requireTempfail(t, d, "QRO1", "")
			if err := remount(mnt, "rw"); err != nil {
				t.Fatal(err)
			}
			relay.s.Close()
			requireRelayTempfailLogged(t, d, "ro1", "")
		} else if !strings.Contains(err.Error(), "busy") {
			t.Fatalf("%v; want it refused as busy", err)
		} else {
			t.Logf("refused: %v", err)
		}
		requireAccepted(t, d, "QRO1")
		requireRelayRefused(t, d, "ro2")
	})

	t.Run("start on a read-only file system", func(t *testing.T) {
		d.stop()
		if err := remount(mnt, "ro"); err != nil {
			t.Fatal(err)
		}
		ro := newDaemonLike(t, d)
		if err := ro.start(); err == nil {
			// Serving without a writable log: it must at least tempfail.
			requireTempfail(t, ro, "QRO2", "")
			ro.stop()
			t.Fatal("the daemon started with its log on a read-only file system")
		} else if !strings.Contains(err.Error(), "exited") || !containsAll(ro.log(), []string{"transaction log", d.db}) {
			t.Fatalf("start on a read-only file system: %v; want an exit naming the transaction log\n%s", err, ro.log())
		}
		// The cause it gives is SQLite's, see the report on
		// logstore.Open: "unable to open database file: no such file or
		// directory" (the missing -shm file it cannot create).
		t.Logf("refused to start: %s", lastLine(ro.log()))

		if err := remount(mnt, "rw"); err != nil {
			t.Fatal(err)
		}
		again := restartDaemon(t, d)
		requireAccepted(t, again, "QRO2")
		if _, ok := again.row(t, "QRO0"); !ok {
			t.Error("the rows written before the remount are gone")
		}
		requireRelayRefused(t, again, "ro3")
		again.stop()
	})
	integrityCheck(t, d.db)
}

// TestLocked holds the database's write lock from another connection, as
// the sqlite3 shell or a backup might, for longer than the busy timeout
// (5s): the save gives up, the client hears 451 4.3.0; the lock released,
// the next message is accepted and logged. It needs no root.
func TestLocked(t *testing.T) {
	d := startDaemon(t, tcpListen, "")
	requireAccepted(t, d, "QLOCK0")
	requireRelayRefused(t, d, "lock0")

	db, err := sql.Open("sqlite3", "file:"+d.db)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		t.Fatal(err)
	}
	locked := time.Now()
	relay := requireRelayTempfail(t, d, "lock1")
	rcptWait := time.Since(locked)
	requireTempfail(t, d, "QLOCK1", "database is locked")
	held := time.Since(locked)
	if _, err := conn.ExecContext(ctx, "ROLLBACK"); err != nil {
		t.Fatal(err)
	}
	t.Logf("held the write lock %v; the RCPT reply came after %v, the end-of-message one %v later",
		held.Round(time.Millisecond), rcptWait.Round(time.Millisecond), (held - rcptWait).Round(time.Millisecond))

	relay.s.Close()
	requireRelayTempfailLogged(t, d, "lock1", "database is locked")
	requireAccepted(t, d, "QLOCK1")
	requireRelayRefused(t, d, "lock2")
	d.stop()
}

// requireAccepted sends a message from a trusted client and requires that
// it be accepted and its row committed with the same verdict.
func requireAccepted(t *testing.T, d *daemon, queueID string) {
	t.Helper()
	act := d.deliver(t, queueID)
	if act.Type != milter.ActionAccept {
		t.Fatalf("%s: %v %q; want accept", queueID, act.Type, act.SMTPReply)
	}
	if r, ok := d.row(t, queueID); !ok || r.Action != "accept" {
		t.Fatalf("%s was accepted; its row: %s; want action accept", queueID, rowText(r, ok))
	}
}

// requireTempfail sends a message that would be accepted and requires 451
// 4.3.0, no row, and a debug log line naming the cause.
func requireTempfail(t *testing.T, d *daemon, queueID, cause string) {
	t.Helper()
	act := d.deliver(t, queueID)
	if !act.StopProcessing() || !strings.HasPrefix(act.SMTPReply, "451 4.3.0") {
		t.Fatalf("%s with the log unwritable: %v %q; want 451 4.3.0", queueID, act.Type, act.SMTPReply)
	}
	if r, ok := d.row(t, queueID); ok {
		t.Errorf("%s was tempfailed but has a row: %+v", queueID, r)
	}
	d.waitLog(t, "cannot write the transaction log", "queue_id="+queueID, cause)
}

// requireRelayTempfail has an outside client try to relay, which is
// refused at RCPT (554) when the refusal can be logged, and requires 451
// 4.3.0 instead. It returns the session, still open: its transaction ends,
// and is logged, when the caller closes it.
func requireRelayTempfail(t *testing.T, d *daemon, tag string) *mta {
	t.Helper()
	m, act := d.relay(t, tag)
	if !act.StopProcessing() || !strings.HasPrefix(act.SMTPReply, "451 4.3.0") {
		m.s.Close()
		t.Fatalf("relay %s with the log unwritable: %v %q; want 451 4.3.0", tag, act.Type, act.SMTPReply)
	}
	return m
}

// requireRelayTempfailLogged requires the row of a relay attempt that was
// told 451 at RCPT, written when its session ended: it must say tempfail
// (never the 554 the client did not get) and keep the cause, and so must
// the debug log.
//
// The debug log has the cause only from the end of the session: RcptTo in
// milter/session.go does not log a failed save when it happens.
func requireRelayTempfailLogged(t *testing.T, d *daemon, tag, cause string) {
	t.Helper()
	d.waitLog(t, "msg=transaction", "from="+tag+"@sender.test", "action=tempfail", "reason=LogUnavailable", cause)
	r, ok := d.relayRow(t, tag)
	if !ok || r.Action != "tempfail" || r.Reason != "LogUnavailable" || !strings.Contains(r.Error, cause) ||
		len(r.Recipients) != 1 || r.Recipients[0].Action != "tempfail" {
		t.Fatalf("relay %s, told 451 at RCPT: its row: %s; want tempfail LogUnavailable with error %q", tag, rowText(r, ok), cause)
	}
}

// requireRelayRefused requires the RCPT refusal and its row, committed
// before the reply. Then it closes the session and waits for the row's
// final update, so that the daemon is idle when the caller goes on.
func requireRelayRefused(t *testing.T, d *daemon, tag string) {
	t.Helper()
	m, act := d.relay(t, tag)
	if !act.StopProcessing() || !strings.HasPrefix(act.SMTPReply, "554 5.7.1 RelayDenied") {
		m.s.Close()
		t.Fatalf("relay %s: %v %q; want 554 5.7.1 RelayDenied", tag, act.Type, act.SMTPReply)
	}
	if r, ok := d.relayRow(t, tag); !ok || r.Action != "reject" || r.Reason != "RelayDenied" {
		m.s.Close()
		t.Fatalf("relay %s refused: its row: %s; want reject RelayDenied", tag, rowText(r, ok))
	}
	m.s.Close()
	d.waitLog(t, "msg=transaction", "from="+tag+"@sender.test", "action=reject")
}

// faultClientTimeout is the client's read timeout in the fault tests: a
// save may wait up to the milter's saveTimeout (15s) for the writer.
const faultClientTimeout = 30 * time.Second

// session opens a milter session the way Postfix does, with a read timeout
// long enough for a save that waits on a lock.
func (d *daemon) session(t *testing.T, clientIP string) *mta {
	t.Helper()
	return d.connect(t, clientIP, milter.WithReadTimeout(faultClientTimeout))
}

// deliver sends one message from a trusted client (127.0.0.1, relaying, so
// accepted whenever its row can be written) and returns the
// end-of-message reply. It closes the session.
func (d *daemon) deliver(t *testing.T, queueID string) *milter.Action {
	t.Helper()
	m := d.session(t, "127.0.0.1")
	defer m.s.Close()
	m.step("mail", must(m.s.Mail("app@example.com", "")))
	m.step("rcpt", must(m.s.Rcpt("v@elsewhere.test", "")))
	hdrs := [][2]string{{"From", " <app@example.com>"}, {"Subject", " " + queueID}, {"Message-Id", " <" + queueID + "@example.com>"}}
	_, act := m.message(queueID, hdrs, "hi\r\n")
	return act
}

// relay has an outside client (192.0.2.1, SPF pass) try to relay from
// tag@sender.test to tag@elsewhere.test, and returns the open session and
// the RCPT reply.
func (d *daemon) relay(t *testing.T, tag string) (*mta, *milter.Action) {
	t.Helper()
	m := d.session(t, "192.0.2.1")
	m.step("mail", must(m.s.Mail(tag+"@sender.test", "")))
	return m, must(m.s.Rcpt(tag+"@elsewhere.test", ""))
}

// relayRow returns the row of relay's attempt.
func (d *daemon) relayRow(t *testing.T, tag string) (logstore.Record, bool) {
	t.Helper()
	for _, r := range d.allRows(t) {
		if r.MailFrom == tag+"@sender.test" {
			return r, true
		}
	}
	return logstore.Record{}, false
}

// allRows reads every row, with its recipients.
func (d *daemon) allRows(t *testing.T) []logstore.Record {
	t.Helper()
	st, err := logstore.OpenReadOnly(d.db)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	recs, err := st.Recent(context.Background(), 1_000_000)
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

// row returns the newest row with the queue id.
func (d *daemon) row(t *testing.T, queueID string) (logstore.Record, bool) {
	t.Helper()
	for _, r := range d.allRows(t) {
		if r.QueueID == queueID {
			return r, true
		}
	}
	return logstore.Record{}, false
}

// waitLog waits until one line of the debug log contains every word. The
// daemon writes the line before it replies, but the test reads its stderr
// asynchronously.
func (d *daemon) waitLog(t *testing.T, words ...string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		for _, line := range strings.Split(d.log(), "\n") {
			if containsAll(line, words) {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no debug log line with %q\n%s", words, d.log())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// rowText shows a row found by row or relayRow in a failure message.
func rowText(r logstore.Record, ok bool) string {
	if !ok {
		return "none"
	}
	return fmt.Sprintf("%+v", r)
}

func containsAll(s string, words []string) bool {
	for _, w := range words {
		if !strings.Contains(s, w) {
			return false
		}
	}
	return true
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// integrityCheck runs SQLite's full consistency check on the database.
func integrityCheck(t *testing.T, path string) {
	t.Helper()
	db, err := sql.Open("sqlite3", "file:"+path+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var res []string
	rows, err := db.Query("PRAGMA integrity_check")
	if err != nil {
		t.Fatalf("integrity_check: %v", err)
	}
	defer rows.Close()
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		res = append(res, s)
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("integrity_check: %v", err)
	}
	if len(res) != 1 || res[0] != "ok" {
		t.Fatalf("integrity_check: %q", res)
	}
}

// newDaemonLike prepares, without starting it, a daemon with d's command
// line, environment and database.
func newDaemonLike(t *testing.T, d *daemon) *daemon {
	nd := &daemon{t: t, db: d.db, dns: d.dns, exited: make(chan error, 1)}
	nd.cmd = exec.Command(d.cmd.Path, d.cmd.Args[1:]...)
	nd.cmd.Env = d.cmd.Env
	return nd
}

// restartDaemon starts d's daemon again on the same configuration and
// database, after d has exited, and waits until it listens.
func restartDaemon(t *testing.T, d *daemon) *daemon {
	t.Helper()
	nd := newDaemonLike(t, d)
	if err := nd.start(); err != nil {
		t.Fatalf("restart: %v\n%s", err, nd.log())
	}
	return nd
}

// start starts a daemon made by newDaemonLike and waits until it listens.
// Unlike startDaemon it reads stderr from a pipe of its own, so when the
// daemon exits at once its last words are read before start returns.
func (d *daemon) start() error {
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	d.cmd.Stderr = w
	err = d.cmd.Start()
	w.Close()
	if err != nil {
		r.Close()
		return err
	}
	ready := make(chan string, 1)
	logDone := make(chan struct{})
	go func() {
		defer close(logDone)
		defer r.Close()
		d.readLog(r, ready)
	}()
	go func() { d.exited <- d.cmd.Wait() }()
	d.t.Cleanup(func() {
		if d.cmd.ProcessState == nil {
			d.cmd.Process.Kill()
			<-d.exited
		}
		if d.t.Failed() {
			d.t.Logf("daemon log:\n%s", d.log())
		}
	})
	select {
	case d.addr = <-ready:
		return nil
	case err := <-d.exited:
		select {
		case <-logDone:
		case <-time.After(5 * time.Second):
		}
		return fmt.Errorf("exited before listening: %v", err)
	case <-time.After(20 * time.Second):
		return errors.New("did not listen within 20s")
	}
}

// The file-system tests run in a private mount and PID namespace: the test
// binary runs the one test again under
//
//	unshare --mount --propagation private --pid --fork --kill-child
//
// so its tmpfs mount is seen by that process and its children (the daemon)
// only, and the kernel kills the daemon and frees the tmpfs when the test
// process ends, even if it crashes or times out. Mounting in the host's
// namespace instead would leave the mount behind (and t.TempDir unable to
// remove its directory) whenever the test dies before its cleanup.
//
// The daemon cannot be put in the namespace alone: the test opens the
// database itself, and SQLite resolves /proc/PID/root (a symbolic link to
// "/") to the host's path, where the tmpfs is not mounted.
const namespaceEnv = "MXGUARD_TEST_NAMESPACE_DIR"

// optOutEnv is the developers' way to skip the tests that need root, as for
// the end-to-end tests (e2e/README.md). In CI they must run.
const optOutEnv = "MXGUARD_E2E"

// inPrivateNamespace runs the calling test again in a private namespace.
// In that child run it returns an empty directory to mount on and true; in
// the parent it waits for the child, reports its result and returns false.
func inPrivateNamespace(t *testing.T) (string, bool) {
	t.Helper()
	if dir := os.Getenv(namespaceEnv); dir != "" {
		return dir, true
	}
	if os.Getenv(optOutEnv) == "0" {
		t.Skipf("%s=0: tests that need root are skipped", optOutEnv)
	}
	if os.Geteuid() != 0 {
		t.Fatalf("this test mounts a tmpfs and must run as root (%s=0 skips it; see e2e/README.md)", optOutEnv)
	}
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Fatalf("unshare (util-linux) is missing: %v", err)
	}
	timeout := 2 * time.Minute
	if dl, ok := t.Deadline(); ok {
		timeout = time.Until(dl) - 5*time.Second
	}
	args := []string{"--mount", "--propagation", "private", "--pid", "--fork", "--kill-child", "--",
		os.Args[0], "-test.run=^" + regexp.QuoteMeta(t.Name()) + "$", "-test.count=1", "-test.v=true",
		"-test.timeout=" + timeout.String()}
	cmd := exec.Command(unshare, args...)
	cmd.Env = append(os.Environ(), namespaceEnv+"="+t.TempDir())
	// If this process dies, unshare dies, and with it (--kill-child) the
	// namespace's first process, which takes the rest with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s in a private namespace: %v\n%s", t.Name(), err, out)
	}
	if !strings.Contains(string(out), "--- PASS: "+t.Name()) {
		t.Fatalf("%s in a private namespace did not pass:\n%s", t.Name(), out)
	}
	t.Logf("in a private namespace:\n%s", out)
	return "", false
}

func mountTmpfs(t *testing.T, dir, opts string) {
	t.Helper()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", opts+",mode=0755", "mxguard-test", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs on %s: %v\n%s", dir, err, out)
	}
	// startDaemon's t.TempDir, where the configuration and the database
	// go, is then on the tmpfs.
	t.Setenv("TMPDIR", dir)
}

// remount changes the tmpfs to "ro" or "rw".
func remount(dir, mode string) error {
	out, err := exec.Command("mount", "-o", "remount,"+mode, dir).CombinedOutput()
	if err != nil {
		return fmt.Errorf("mount -o remount,%s %s: %v: %s", mode, dir, err, bytes.TrimSpace(out))
	}
	return nil
}

// fill appends to path until the file system is full.
func fill(t *testing.T, path string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 64<<10)
	for n := 0; n < 1<<30; n += len(chunk) {
		_, err := f.Write(chunk)
		if errors.Is(err, syscall.ENOSPC) {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	t.Fatal("the file system did not fill up")
}

func size(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}
