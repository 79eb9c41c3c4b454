package quarantine

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// postqueueJ is postqueue -j output recorded from Postfix 3.7.11: a message
// mxguard quarantined, one held by header_checks, a deferred one with delay
// reasons, and lines with what a parser must cope with (the null sender,
// \u escapes, a member this parser does not know).
const postqueueJ = `{"queue_name": "hold", "queue_id": "C648F988526", "arrival_time": 1795406748, "message_size": 364, "forced_expire": false, "sender": "billing@sender.example.net", "recipients": [{"address": "bob@example.test"}, {"address": "carol@example.test"}]}
{"queue_name": "deferred", "queue_id": "B8F8D988339", "arrival_time": 1795406530, "message_size": 288, "forced_expire": false, "sender": "a@example.test", "recipients": [{"address": "b@example.test", "delay_reason": "connect to mx.example.org[192.0.2.25]:25: Connection timed out"}]}
{"queue_name": "hold", "queue_id": "4TzL0k1xQmz3Jk7", "arrival_time": 1795406800, "message_size": 1024, "forced_expire": false, "sender": "", "recipients": [{"address": "postmaster@example.test"}], "future_member": {"x": 1}}

{"queue_name": "active", "queue_id": "1E9C4988022", "arrival_time": 1795406751, "message_size": 267, "forced_expire": true, "sender": "caf\u00e9@example.test", "recipients": []}
`

func TestParseQueue(t *testing.T) {
	got, err := parseQueue([]byte(postqueueJ))
	if err != nil {
		t.Fatal(err)
	}
	want := []queued{
		{queue: "hold", Message: Message{QueueID: "C648F988526", Arrival: time.Unix(1795406748, 0), Sender: "billing@sender.example.net",
			Recipients: []string{"bob@example.test", "carol@example.test"}, Size: 364}},
		{queue: "deferred", Message: Message{QueueID: "B8F8D988339", Arrival: time.Unix(1795406530, 0), Sender: "a@example.test",
			Recipients: []string{"b@example.test"}, Size: 288}},
		{queue: "hold", Message: Message{QueueID: "4TzL0k1xQmz3Jk7", Arrival: time.Unix(1795406800, 0), Sender: "",
			Recipients: []string{"postmaster@example.test"}, Size: 1024}},
		{queue: "active", Message: Message{QueueID: "1E9C4988022", Arrival: time.Unix(1795406751, 0), Sender: "café@example.test", Size: 267}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("parseQueue:\n got %+v\nwant %+v", got, want)
	}

	if got, err := parseQueue(nil); err != nil || len(got) != 0 {
		t.Errorf("an empty queue: %v, %v", got, err)
	}
	for _, bad := range []string{
		"Mail queue is empty\n", // -p output, not -j
		`{"queue_name": "hold", "queue_id": "C648F988526"` + "\n",
		`{"queue_name": "hold", "arrival_time": 1}` + "\n",
	} {
		if _, err := parseQueue([]byte(bad)); err == nil {
			t.Errorf("parseQueue(%q) succeeded", bad)
		}
	}
}

func TestValidQueueID(t *testing.T) {
	for id, want := range map[string]bool{
		"C648F988526":           true, // short: hex
		"B9EE7BC1FC":            true,
		"4XyZ1234AB":            true, // long: alphanumeric, 10 or more
		"4TzL0k1xQmz3Jk7":       true,
		"ABCDEF":                true,
		"ABCDE":                 false,
		"abcdef":                false, // short ids are upper case
		"ALL":                   false, // postsuper: every message
		"-":                     false, // postsuper: read ids from stdin
		"":                      false,
		"C648F988526 hold":      false,
		"-d":                    false,
		"../../etc/passwd":      false,
		"C648F988526\n":         false,
		strings.Repeat("A", 65): false,
	} {
		if got := ValidQueueID(id); got != want {
			t.Errorf("ValidQueueID(%q) = %v; want %v", id, got, want)
		}
	}
}

func TestPostsuperCount(t *testing.T) {
	for _, tt := range []struct {
		stderr, what string
		n            int
		ok           bool
	}{
		{"postsuper: C648F988526: released from hold\npostsuper: Released from hold: 1 message\n", "Released from hold", 1, true},
		{"postsuper: Released from hold: 0 messages\n", "Released from hold", 0, true},
		{"postsuper: 0D886988527: removed\npostsuper: Deleted: 1 message\n", "Deleted", 1, true},
		{"postsuper: Deleted: 0 messages\n", "Deleted", 0, true},
		{"postsuper: Deleted: 2 messages\n", "Released from hold", 0, false},
		{"", "Deleted", 0, false},
	} {
		n, ok := postsuperCount([]byte(tt.stderr), tt.what)
		if n != tt.n || ok != tt.ok {
			t.Errorf("postsuperCount(%q, %q) = %d, %v; want %d, %v", tt.stderr, tt.what, n, ok, tt.n, tt.ok)
		}
	}
}

// call is one command a fake runner saw.
type call struct {
	cmd  string // base name
	args []string
}

// reply is what the fake runner answers to a command.
type reply struct {
	stdout, stderr string
	err            error
}

// fakeRun records commands and answers them from replies, by base name.
func fakeRun(calls *[]call, replies map[string]reply) func(context.Context, string, ...string) ([]byte, []byte, error) {
	return func(_ context.Context, path string, args ...string) ([]byte, []byte, error) {
		name := filepath.Base(path)
		*calls = append(*calls, call{name, args})
		r := replies[name+" "+strings.Join(args, " ")]
		return []byte(r.stdout), []byte(r.stderr), r.err
	}
}

// fakeCommands makes a directory with executable postqueue and postsuper,
// for lookPath; the fake runner never runs them.
func fakeCommands(t *testing.T) string {
	dir := t.TempDir()
	for _, name := range []string{"postqueue", "postsuper"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\nexit 1\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestPostfixCommands(t *testing.T) {
	const id = "C648F988526"
	released := reply{stderr: "postsuper: " + id + ": released from hold\npostsuper: Released from hold: 1 message\n"}
	exit1 := errors.New("exit status 1")
	tests := []struct {
		name      string
		configDir string
		do        func(p *Postfix) error
		replies   map[string]reply
		want      []call
		wantErr   error // errors.Is; nil: no error
	}{
		{
			name: "release",
			do:   func(p *Postfix) error { return p.Release(t.Context(), id) },
			replies: map[string]reply{
				"postsuper -H " + id: released,
			},
			want: []call{{"postsuper", []string{"-H", id}}, {"postqueue", []string{"-i", id}}},
		},
		{
			name:      "release, another instance",
			configDir: "/etc/postfix-out",
			do:        func(p *Postfix) error { return p.Release(t.Context(), id) },
			replies: map[string]reply{
				"postsuper -c /etc/postfix-out -H " + id: released,
			},
			want: []call{
				{"postsuper", []string{"-c", "/etc/postfix-out", "-H", id}},
				{"postqueue", []string{"-c", "/etc/postfix-out", "-i", id}},
			},
		},
		{
			name: "release of a message no longer held: no postqueue -i",
			do:   func(p *Postfix) error { return p.Release(t.Context(), id) },
			replies: map[string]reply{
				"postsuper -H " + id: {stderr: "postsuper: Released from hold: 0 messages\n"},
			},
			want:    []call{{"postsuper", []string{"-H", id}}},
			wantErr: ErrNotHeld,
		},
		{
			name: "release while Postfix is stopped",
			do:   func(p *Postfix) error { return p.Release(t.Context(), id) },
			replies: map[string]reply{
				"postsuper -H " + id: released,
				"postqueue -i " + id: {stderr: "postqueue: fatal: Cannot flush mail queue - mail system is down\n", err: errors.New("exit status 69")},
			},
			want:    []call{{"postsuper", []string{"-H", id}}, {"postqueue", []string{"-i", id}}},
			wantErr: ErrNotScheduled,
		},
		{
			name: "release by a user other than root",
			do:   func(p *Postfix) error { return p.Release(t.Context(), id) },
			replies: map[string]reply{
				"postsuper -H " + id: {stderr: "postsuper: fatal: use of this command is reserved for the superuser\n", err: exit1},
			},
			want:    []call{{"postsuper", []string{"-H", id}}},
			wantErr: exit1,
		},
		{
			name: "release: postsuper fails after releasing",
			do:   func(p *Postfix) error { return p.Release(t.Context(), id) },
			replies: map[string]reply{
				"postsuper -H " + id: {stderr: "postsuper: " + id + ": released from hold\npostsuper: fatal: open logfile '/var/log/postfix.log': cannot open file: Permission denied\n", err: exit1},
			},
			want: []call{{"postsuper", []string{"-H", id}}, {"postqueue", []string{"-i", id}}},
		},
		{
			name: "delete: from the hold queue only",
			do:   func(p *Postfix) error { return p.Delete(t.Context(), id) },
			replies: map[string]reply{
				"postsuper -d " + id + " hold": {stderr: "postsuper: " + id + ": removed\npostsuper: Deleted: 1 message\n"},
			},
			want: []call{{"postsuper", []string{"-d", id, "hold"}}},
		},
		{
			name: "delete of a message not held",
			do:   func(p *Postfix) error { return p.Delete(t.Context(), id) },
			replies: map[string]reply{
				"postsuper -d " + id + " hold": {stderr: "postsuper: Deleted: 0 messages\n"},
			},
			want:    []call{{"postsuper", []string{"-d", id, "hold"}}},
			wantErr: ErrNotHeld,
		},
		{
			name: "delete: postsuper fails after deleting",
			do:   func(p *Postfix) error { return p.Delete(t.Context(), id) },
			replies: map[string]reply{
				"postsuper -d " + id + " hold": {stderr: "postsuper: " + id + ": removed\npostsuper: fatal: open logfile '/var/log/postfix.log': cannot open file: Permission denied\n", err: exit1},
			},
			want: []call{{"postsuper", []string{"-d", id, "hold"}}},
		},
		{
			name:    "no command runs for a bad queue id",
			do:      func(p *Postfix) error { return p.Delete(t.Context(), "ALL") },
			wantErr: ErrBadQueueID,
		},
		{
			name: "held: the hold queue only",
			do: func(p *Postfix) error {
				held, err := p.Held(t.Context())
				if err == nil && (len(held) != 2 || held[0].QueueID != id || held[1].QueueID != "4TzL0k1xQmz3Jk7") {
					t.Errorf("Held = %+v", held)
				}
				return err
			},
			replies: map[string]reply{"postqueue -j": {stdout: postqueueJ}},
			want:    []call{{"postqueue", []string{"-j"}}},
		},
		{
			name:    "held: garbage from postqueue",
			do:      func(p *Postfix) error { _, err := p.Held(t.Context()); return err },
			replies: map[string]reply{"postqueue -j": {stdout: "{not json\n"}},
			want:    []call{{"postqueue", []string{"-j"}}},
			wantErr: errAny,
		},
	}
	dir := fakeCommands(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var calls []call
			p := &Postfix{ConfigDir: tt.configDir, CommandDir: dir, run: fakeRun(&calls, tt.replies)}
			err := tt.do(p)
			switch {
			case tt.wantErr == nil && err != nil:
				t.Errorf("error %v", err)
			case tt.wantErr == errAny && err == nil,
				tt.wantErr != nil && tt.wantErr != errAny && !errors.Is(err, tt.wantErr):
				t.Errorf("error %v; want %v", err, tt.wantErr)
			}
			if !reflect.DeepEqual(calls, tt.want) {
				t.Errorf("commands:\n got %v\nwant %v", calls, tt.want)
			}
		})
	}
}

// errAny in a test table accepts any error.
var errAny = errors.New("any error")

func TestPostfixErrorText(t *testing.T) {
	var calls []call
	p := &Postfix{CommandDir: fakeCommands(t), run: fakeRun(&calls, map[string]reply{
		"postsuper -H C648F988526": {stderr: "postsuper: fatal: use of this command is reserved for the superuser\n", err: errors.New("exit status 1")},
	})}
	err := p.Release(t.Context(), "C648F988526")
	want := "postsuper -H C648F988526: exit status 1: postsuper: fatal: use of this command is reserved for the superuser"
	if err == nil || err.Error() != want {
		t.Errorf("error %q; want %q", err, want)
	}
}

func TestPostfixNotInstalled(t *testing.T) {
	p := &Postfix{CommandDir: t.TempDir()}
	_, err := p.Held(t.Context())
	if !errors.Is(err, ErrNoPostfix) || !strings.HasPrefix(err.Error(), "postqueue not found") || !strings.Contains(err.Error(), "sendmail -qQ") {
		t.Errorf("error %v; want postqueue not found, wrapping ErrNoPostfix", err)
	}

	// Without CommandDir: $PATH, then /usr/sbin.
	t.Setenv("PATH", t.TempDir())
	p = &Postfix{}
	path, err := p.lookPath("postsuper")
	if _, statErr := os.Stat("/usr/sbin/postsuper"); statErr == nil {
		if err != nil || path != "/usr/sbin/postsuper" {
			t.Errorf("lookPath = %q, %v; want /usr/sbin/postsuper", path, err)
		}
	} else if !errors.Is(err, ErrNoPostfix) {
		t.Errorf("lookPath without Postfix: %q, %v", path, err)
	}
}
