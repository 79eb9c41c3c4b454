package logstore

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

func TestByQueueID(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log.db")
	s := openTest(t, Options{Path: path})
	base := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	old := &Record{StartedAt: base, QueueID: "4XyZ1234", MailFrom: "old@example.net", Action: "accept",
		Recipients: []Recipient{{Address: "a@example.com"}}}
	other := &Record{StartedAt: base.Add(time.Minute), QueueID: "5AbC", Action: "accept",
		Recipients: []Recipient{{Address: "x@example.com"}}}
	// Saved first but started last: the order is by time, not by id.
	newer := fullRecord()
	newer.StartedAt = base.Add(time.Hour)
	noID := &Record{StartedAt: base.Add(2 * time.Hour), Action: "aborted", Reason: "NoTransaction"}
	for _, r := range []*Record{newer, other, old, noID} {
		if err := s.Save(t.Context(), r); err != nil {
			t.Fatal(err)
		}
	}

	got, err := s.ByQueueID(t.Context(), "4XyZ1234")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("ByQueueID returned %d records, want 2: %+v", len(got), got)
	}
	checkRecord(t, &got[0], stored(newer))
	checkRecord(t, &got[1], stored(old))

	if got, err := s.ByQueueID(t.Context(), "NOSUCH"); err != nil || len(got) != 0 {
		t.Errorf("ByQueueID of an unknown id = %v, %v; want nothing, no error", got, err)
	}
	if _, err := s.ByQueueID(t.Context(), ""); err == nil {
		t.Error("ByQueueID(\"\") succeeded; it would match every row without a queue id")
	}

	// Readers use it too.
	ro, err := OpenReadOnly(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if got, err := ro.ByQueueID(t.Context(), "5AbC"); err != nil || len(got) != 1 || got[0].Recipients[0].Address != "x@example.com" {
		t.Errorf("read-only ByQueueID = %+v, %v", got, err)
	}
}

// TestRootKeepsOwnership checks what mxguard quarantine relies on when root
// annotates a log that belongs to the daemon's user: SQLite, running as
// root, gives the -wal and -shm files it creates the database file's owner,
// so the daemon can still open them afterwards.
func TestRootKeepsOwnership(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	const uid, gid = 65534, 65534 // nobody
	dir := t.TempDir()
	path := filepath.Join(dir, "log.db")
	s, err := Open(Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(path, uid, gid); err != nil {
		t.Fatal(err)
	}

	s, err = Open(Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Save(t.Context(), &Record{QueueID: "4XyZ1234"}); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{path + "-wal", path + "-shm"} {
		fi, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if st.Uid != uid || st.Gid != gid {
			t.Errorf("%s is owned by %d:%d, want the database's %d:%d", filepath.Base(f), st.Uid, st.Gid, uid, gid)
		}
	}
}
