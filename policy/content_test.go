package policy

import (
	"context"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mxguard/mxguard/scanners/spf"
)

// scriptedCheck is a content check that takes a set time, then answers as
// scripted (or panics, or ignores its context), counting its calls.
type scriptedCheck struct {
	name     string
	timeout  time.Duration
	delay    time.Duration
	deaf     bool // ignores ctx: a hung engine
	panics   bool
	verdict  Verdict
	calls    atomic.Int32
	finished atomic.Int32
}

func (c *scriptedCheck) Name() string           { return c.name }
func (c *scriptedCheck) Timeout() time.Duration { return c.timeout }
func (c *scriptedCheck) Check(ctx context.Context, t *Transaction, m *Message) (Evidence, Verdict) {
	c.calls.Add(1)
	defer c.finished.Add(1)
	if c.panics {
		panic("scanner bug")
	}
	if c.deaf {
		time.Sleep(c.delay)
	} else {
		select {
		case <-time.After(c.delay):
		case <-ctx.Done():
			return Evidence{Result: "cancelled", Err: ctx.Err()}, Trouble(InternalError, ctx.Err())
		}
	}
	if c.verdict.Action == unset {
		return Evidence{Result: "clean"}, accept
	}
	return Evidence{Result: "hit"}, c.verdict
}

func endOfMessage(t *testing.T, checks ...ContentCheck) (Verdict, *Transaction, time.Duration) {
	t.Helper()
	e, _ := newTestEngine(t, spf.Pass)
	e.UseContentChecks(checks...)
	conn := &Connection{ClientIP: netip.MustParseAddr("192.0.2.1")}
	e.Connect(conn)
	tr := e.NewTransaction(conn)
	tr.MailFrom = "x@sender.test"
	e.Mail(context.Background(), tr)
	e.Rcpt(context.Background(), tr, "u@example.com")
	start := time.Now()
	v := e.EndOfMessage(context.Background(), tr, &Message{})
	return v, tr, time.Since(start)
}

func TestContentChecksRunConcurrently(t *testing.T) {
	a := &scriptedCheck{name: "a", timeout: time.Second, delay: 200 * time.Millisecond}
	b := &scriptedCheck{name: "b", timeout: time.Second, delay: 200 * time.Millisecond}
	v, tr, took := endOfMessage(t, a, b)
	if v.Action != Accept || a.calls.Load() != 1 || b.calls.Load() != 1 {
		t.Fatalf("verdict %v, calls %d %d", v.Action, a.calls.Load(), b.calls.Load())
	}
	if took >= 400*time.Millisecond {
		t.Errorf("two 200ms checks took %v: not concurrent", took)
	}
	var names []string
	for _, ev := range tr.Evidence {
		names = append(names, ev.Check+"="+ev.Result)
	}
	if got := strings.Join(names, " "); !strings.Contains(got, "a=clean b=clean") {
		t.Errorf("evidence %q lacks both checks in order", got)
	}
}

func TestContentChecksFailSafe(t *testing.T) {
	reject := refuse(Reject, 554, "5.7.1", Reason("Virus"), "infected")
	tests := []struct {
		name   string
		checks []*scriptedCheck
		reply  string
	}{
		{"strongest verdict wins", []*scriptedCheck{
			{name: "tagger", timeout: time.Second, verdict: Verdict{Action: Tag, Reason: "SpamTag"}},
			{name: "virus", timeout: time.Second, verdict: reject},
		}, "554 5.7.1 Virus"},
		{"a panic tempfails", []*scriptedCheck{{name: "buggy", timeout: time.Second, panics: true}}, "451 4.3.0 InternalError"},
		{"a check past its own deadline tempfails", []*scriptedCheck{{name: "slow", timeout: 50 * time.Millisecond, delay: time.Second}}, "451 4.3.0 InternalError"},
		{"a hung check is abandoned at its deadline", []*scriptedCheck{{name: "hung", timeout: 50 * time.Millisecond, delay: time.Second, deaf: true}}, "451 4.3.0 InternalError"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var checks []ContentCheck
			for _, c := range tt.checks {
				checks = append(checks, c)
			}
			v, tr, took := endOfMessage(t, checks...)
			if !strings.HasPrefix(v.Reply(), tt.reply) {
				t.Errorf("reply %q; want %q", v.Reply(), tt.reply)
			}
			// A check that ignores its context gets deafGrace to answer.
			if took > 50*time.Millisecond+deafGrace+200*time.Millisecond {
				t.Errorf("took %v: a check held the stage past its deadline", took)
			}
			if len(v.AddHeaders) != 0 {
				t.Errorf("a refused message got header edits: %v", v.AddHeaders)
			}
			if ev := tr.Evidence[len(tr.Evidence)-1]; tt.reply[0] == '4' && ev.Err == nil {
				t.Errorf("evidence does not say what went wrong: %+v", ev)
			}
		})
	}
}
