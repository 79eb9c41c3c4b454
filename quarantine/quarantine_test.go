package quarantine

import (
	"context"
	"errors"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mxguard/mxguard/logstore"
)

// fakeMTA is a hold queue in memory that counts what was asked of it.
type fakeMTA struct {
	held      []Message
	heldErr   error
	actErr    error // returned by Release and Delete
	released  []string
	deleted   []string
	heldCalls int
}

func (f *fakeMTA) Held(context.Context) ([]Message, error) {
	f.heldCalls++
	return slices.Clone(f.held), f.heldErr
}

func (f *fakeMTA) Release(_ context.Context, id string) error {
	if f.actErr != nil && !errors.Is(f.actErr, ErrNotScheduled) {
		return f.actErr
	}
	f.released = append(f.released, id)
	f.remove(id)
	return f.actErr
}

func (f *fakeMTA) Delete(_ context.Context, id string) error {
	if f.actErr != nil {
		return f.actErr
	}
	f.deleted = append(f.deleted, id)
	f.remove(id)
	return nil
}

func (f *fakeMTA) remove(id string) {
	f.held = slices.DeleteFunc(f.held, func(m Message) bool { return m.QueueID == id })
}

var t0 = time.Date(2025, 6, 1, 14, 0, 0, 0, time.UTC)

// fixture is a log with a quarantined message, an accepted one that
// Postfix held anyway, and an old row whose short queue id Postfix has
// since reused; and a hold queue with those and one mxguard never saw.
func fixture(t *testing.T) (*fakeMTA, *logstore.Store, map[string]*logstore.Record) {
	t.Helper()
	st, err := logstore.Open(logstore.Options{Path: filepath.Join(t.TempDir(), "log.db")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	recs := map[string]*logstore.Record{
		"quarantined": {StartedAt: t0, EndedAt: t0.Add(2 * time.Second), QueueID: "C648F988526",
			ClientIP: "192.0.2.7", MailFrom: "billing@sender.example", Subject: "Invoice", Organization: "example",
			Action: "quarantine", Reason: "SPFFail", Reply: "250 2.0.0 queued",
			Evidence:   []logstore.Evidence{{Check: "spf", Result: "fail", Detail: "sender.example"}},
			Recipients: []logstore.Recipient{{Address: "bob@example.com", Organization: "example", Action: "quarantine", Reason: "SPFFail"}, {Address: "carol@example.com", Organization: "example", Action: "quarantine", Reason: "SPFFail"}}},
		"accepted": {StartedAt: t0.Add(time.Minute), QueueID: "0D886988527", Action: "accept",
			Recipients: []logstore.Recipient{{Address: "bob@example.com"}}},
		"reused": {StartedAt: t0.Add(-48 * time.Hour), QueueID: "3FED4988029", Action: "quarantine", Reason: "SPFSoftFail"},
	}
	for _, k := range []string{"quarantined", "accepted", "reused"} {
		if err := st.Save(t.Context(), recs[k]); err != nil {
			t.Fatal(err)
		}
	}
	mta := &fakeMTA{held: []Message{
		{QueueID: "3FED4988029", Arrival: t0.Add(3 * time.Minute), Sender: "x@example.org", Recipients: []string{"bob@example.com"}},
		{QueueID: "C648F988526", Arrival: t0.Add(time.Second), Sender: "billing@sender.example", Recipients: []string{"bob@example.com", "carol@example.com"}},
		{QueueID: "0D886988527", Arrival: t0.Add(time.Minute), Sender: "friend@example.org", Recipients: []string{"bob@example.com"}},
		{QueueID: "1E9C4988022", Arrival: t0.Add(2 * time.Minute), Sender: "", Recipients: []string{"postmaster@example.com"}},
	}}
	return mta, st, recs
}

func TestList(t *testing.T) {
	mta, st, _ := fixture(t)
	m := &Manager{MTA: mta, Log: st}
	entries, err := m.List(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	type row struct{ id, reason, subject string }
	var got []row
	for _, e := range entries {
		r := row{id: e.QueueID, reason: e.Reason()}
		if e.Record != nil {
			r.subject = e.Record.Subject
		}
		got = append(got, r)
	}
	want := []row{ // newest first
		{"3FED4988029", "(not in mxguard's log)", ""}, // the row is two days older: another message
		{"1E9C4988022", "(not in mxguard's log)", ""},
		{"0D886988527", "(not held by mxguard, whose verdict was accept)", ""},
		{"C648F988526", "SPFFail", "Invoice"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("List:\n got %+v\nwant %+v", got, want)
	}

	mta.heldErr = errors.New("postqueue: fatal: boom")
	if _, err := m.List(t.Context()); err == nil || !strings.Contains(err.Error(), "boom") {
		t.Errorf("List with a failing MTA: %v", err)
	}
}

func TestReleaseAndDeleteAreLogged(t *testing.T) {
	for _, tt := range []struct {
		verb   string
		act    func(*Manager) func(context.Context, string, string) (Outcome, error)
		result string
	}{
		{"release", func(m *Manager) func(context.Context, string, string) (Outcome, error) { return m.Release }, Released},
		{"delete", func(m *Manager) func(context.Context, string, string) (Outcome, error) { return m.Delete }, Deleted},
	} {
		t.Run(tt.verb, func(t *testing.T) {
			mta, st, recs := fixture(t)
			now := t0.Add(time.Hour)
			m := &Manager{MTA: mta, Log: st, Now: func() time.Time { return now }}
			out, err := tt.act(m)(t.Context(), "C648F988526", "root (sudo by alice)")
			if err != nil || out.Warning != nil || !out.Logged {
				t.Fatalf("%s: %+v, %v", tt.verb, out, err)
			}
			if tt.verb == "release" && !slices.Equal(mta.released, []string{"C648F988526"}) ||
				tt.verb == "delete" && !slices.Equal(mta.deleted, []string{"C648F988526"}) {
				t.Errorf("MTA released %v, deleted %v", mta.released, mta.deleted)
			}

			// The row gained one evidence entry; the verdict and the
			// recipients are as they were.
			want := *recs["quarantined"]
			want.Evidence = append(slices.Clone(want.Evidence), logstore.Evidence{
				Check: "quarantine", Result: tt.result, Detail: "by root (sudo by alice) at 2025-06-01T15:00:00Z"})
			got, err := st.Get(t.Context(), want.ID)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got.Evidence, want.Evidence) {
				t.Errorf("evidence:\n got %+v\nwant %+v", got.Evidence, want.Evidence)
			}
			if got.Action != "quarantine" || got.Reason != "SPFFail" || !reflect.DeepEqual(got.Recipients, want.Recipients) {
				t.Errorf("row changed beyond its evidence: %+v", got)
			}
			if !reflect.DeepEqual(out.Record, got) {
				t.Errorf("Outcome.Record is not the row as saved:\n got %+v\nwant %+v", out.Record, got)
			}

			// Again: it is gone from the hold queue now.
			if _, err := tt.act(m)(t.Context(), "C648F988526", "root"); !errors.Is(err, ErrNotHeld) ||
				err.Error() != "C648F988526 is not in the hold queue" {
				t.Errorf("second %s: %v; want ErrNotHeld", tt.verb, err)
			}
		})
	}
}

func TestReleaseNotInLog(t *testing.T) {
	mta, st, _ := fixture(t)
	m := &Manager{MTA: mta, Log: st}
	out, err := m.Release(t.Context(), "1E9C4988022", "root")
	if err != nil || out.Logged || out.Record != nil || out.QueueID != "1E9C4988022" {
		t.Errorf("Release = %+v, %v; want released, not logged", out, err)
	}
	if !slices.Equal(mta.released, []string{"1E9C4988022"}) {
		t.Errorf("released %v", mta.released)
	}
}

func TestReleaseNotScheduled(t *testing.T) {
	mta, st, recs := fixture(t)
	mta.actErr = errors.Join(ErrNotScheduled, errors.New("postqueue: fatal: mail system is down"))
	m := &Manager{MTA: mta, Log: st}
	out, err := m.Release(t.Context(), "C648F988526", "root")
	if err != nil || !errors.Is(out.Warning, ErrNotScheduled) || !out.Logged {
		t.Fatalf("Release = %+v, %v; want a warning, logged", out, err)
	}
	got, err := st.Get(t.Context(), recs["quarantined"].ID)
	if err != nil {
		t.Fatal(err)
	}
	ev := got.Evidence[len(got.Evidence)-1]
	if ev.Result != Released || !strings.Contains(ev.Error, "mail system is down") {
		t.Errorf("evidence %+v; want released, with the warning as its error", ev)
	}
}

// failingLog is a Log whose reads or writes fail.
type failingLog struct {
	Log
	readErr, saveErr error
	saves            int
}

func (f *failingLog) ByQueueID(ctx context.Context, id string) ([]logstore.Record, error) {
	if f.readErr != nil {
		return nil, f.readErr
	}
	return f.Log.ByQueueID(ctx, id)
}

func (f *failingLog) Save(ctx context.Context, r *logstore.Record) error {
	f.saves++
	if f.saveErr != nil {
		return f.saveErr
	}
	return f.Log.Save(ctx, r)
}

func TestNothingDoneUnlessLoggable(t *testing.T) {
	mta, st, _ := fixture(t)
	log := &failingLog{Log: st, readErr: errors.New("database is locked")}
	m := &Manager{MTA: mta, Log: log}
	for _, id := range []string{"C648F988526", "1E9C4988022"} {
		if out, err := m.Release(t.Context(), id, "root"); err == nil || out.QueueID != "" {
			t.Errorf("Release(%s) with an unreadable log = %+v, %v; want an error, nothing done", id, out, err)
		}
	}
	if len(mta.released) != 0 || log.saves != 0 {
		t.Errorf("released %v, saved %d times; want nothing", mta.released, log.saves)
	}

	// Bad ids and ids not held never reach the MTA's Release.
	log.readErr = nil
	mta.heldCalls = 0
	for _, id := range []string{"ALL", "-", "c648f9", "C648F988526 hold", ""} {
		if _, err := m.Delete(t.Context(), id, "root"); !errors.Is(err, ErrBadQueueID) {
			t.Errorf("Delete(%q): %v; want ErrBadQueueID", id, err)
		}
	}
	if mta.heldCalls != 0 {
		t.Errorf("a bad queue id reached the MTA")
	}
	if _, err := m.Delete(t.Context(), "ABCDEF1234", "root"); !errors.Is(err, ErrNotHeld) {
		t.Errorf("Delete of an id not held: %v; want ErrNotHeld", err)
	}
	if len(mta.deleted) != 0 || log.saves != 0 {
		t.Errorf("deleted %v, saved %d times; want nothing", mta.deleted, log.saves)
	}

	// The MTA fails: nothing is recorded.
	mta.actErr = errors.New("postsuper: fatal: use of this command is reserved for the superuser")
	if out, err := m.Delete(t.Context(), "C648F988526", "alice"); err == nil || out.QueueID != "" {
		t.Errorf("Delete with a failing MTA = %+v, %v", out, err)
	}
	if log.saves != 0 {
		t.Errorf("saved %d times after the MTA failed", log.saves)
	}
}

func TestActedButNotRecorded(t *testing.T) {
	mta, st, _ := fixture(t)
	log := &failingLog{Log: st, saveErr: errors.New("disk I/O error")}
	m := &Manager{MTA: mta, Log: log}
	out, err := m.Release(t.Context(), "C648F988526", "root")
	if err == nil || !strings.Contains(err.Error(), "C648F988526 was released, but that could not be recorded") || !strings.Contains(err.Error(), "disk I/O error") {
		t.Errorf("error %v", err)
	}
	// The caller must still learn that the message was released.
	if out.QueueID != "C648F988526" || out.Logged || !slices.Equal(mta.released, []string{"C648F988526"}) {
		t.Errorf("outcome %+v, released %v", out, mta.released)
	}
}

func TestSaveSurvivesCancel(t *testing.T) {
	mta, st, recs := fixture(t)
	ctx, cancel := context.WithCancel(t.Context())
	// Cancelled between the MTA's action and the log write, as by ^C.
	m := &Manager{MTA: &cancelAfterAct{MTA: mta, cancel: cancel}, Log: st}
	if out, err := m.Release(ctx, "C648F988526", "root"); err != nil || !out.Logged {
		t.Fatalf("Release = %+v, %v", out, err)
	}
	got, err := st.Get(t.Context(), recs["quarantined"].ID)
	if err != nil || got.Evidence[len(got.Evidence)-1].Result != Released {
		t.Errorf("row %+v, %v; want the release recorded", got, err)
	}
}

type cancelAfterAct struct {
	MTA
	cancel func()
}

func (c *cancelAfterAct) Release(ctx context.Context, id string) error {
	defer c.cancel()
	return c.MTA.Release(ctx, id)
}

func TestAge(t *testing.T) {
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	for d, want := range map[time.Duration]string{
		-time.Second:              "0s", // clocks disagree
		45 * time.Second:          "45s",
		12 * time.Minute:          "12m",
		5*time.Hour + time.Minute: "5h",
		47 * time.Hour:            "47h",
		72 * time.Hour:            "3d",
	} {
		if got := Age(now, now.Add(-d)); got != want {
			t.Errorf("age(%v) = %q; want %q", d, got, want)
		}
	}
	if got := Age(now, time.Time{}); got != "?" {
		t.Errorf("age of an unknown time = %q", got)
	}
}
