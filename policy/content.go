package policy

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// ContentCheck is a check of the message itself (spam, virus, DKIM, DMARC
// in later work). Checks run at end of message, concurrently, each under
// its own deadline within the stage's; the slowest one bounds the stage,
// not their sum. A check returns its evidence and, when it objects, a
// verdict (Action Accept means no objection).
type ContentCheck interface {
	Name() string
	Timeout() time.Duration
	Check(ctx context.Context, t *Transaction, msg *Message) (Evidence, Verdict)
}

// deafGrace is how long past its deadline a check may take to return.
const deafGrace = 250 * time.Millisecond

// UseContentChecks sets the checks run at end of message.
func (e *Engine) UseContentChecks(checks ...ContentCheck) { e.content = checks }

// runContentChecks runs every content check and returns the strongest
// verdict. A check that panics, or is still running at its deadline, has
// not judged the message: that is a tempfail, never an accept.
func (e *Engine) runContentChecks(ctx context.Context, t *Transaction, msg *Message) Verdict {
	type outcome struct {
		ev Evidence
		v  Verdict
	}
	outcomes := make([]outcome, len(e.content))
	var wg sync.WaitGroup
	var abandoned atomic.Bool
	defer func() { msg.Abandoned = msg.Abandoned || abandoned.Load() }()
	for i, c := range e.content {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, c.Timeout())
			defer cancel()
			outcomes[i] = outcome{ev: Evidence{Check: c.Name()}, v: Trouble(InternalError, fmt.Errorf("%s: no result", c.Name()))}
			done := make(chan outcome, 1)
			go func() {
				defer func() {
					if r := recover(); r != nil {
						err := fmt.Errorf("%s: panic: %v", c.Name(), r)
						done <- outcome{ev: Evidence{Check: c.Name(), Result: "error", Err: err}, v: Trouble(InternalError, err)}
					}
				}()
				start := time.Now()
				ev, v := c.Check(cctx, t, msg)
				ev.Check, ev.Duration = c.Name(), time.Since(start)
				done <- outcome{ev, v}
			}()
			// A check answers its own deadline (an engine timeout is that
			// engine's error, with its on_error action); only one that
			// ignores its context is cut off here, a little later.
			deadline, _ := cctx.Deadline()
			deaf := time.NewTimer(time.Until(deadline) + deafGrace)
			defer deaf.Stop()
			select {
			case o := <-done:
				outcomes[i] = o
			case <-deaf.C:
				abandoned.Store(true)
				err := fmt.Errorf("%s: %w", c.Name(), context.Cause(cctx))
				outcomes[i] = outcome{ev: Evidence{Check: c.Name(), Result: "timeout", Err: err}, v: Trouble(InternalError, err)}
			}
		}()
	}
	wg.Wait()
	// The strongest objection decides; every check's header edits apply
	// (a clean virus scan still says so in its header).
	v := accept
	var edits Verdict
	for _, o := range outcomes {
		t.record(o.ev)
		edits.AddHeaders = append(edits.AddHeaders, o.v.AddHeaders...)
		edits.DeleteHeaders = append(edits.DeleteHeaders, o.v.DeleteHeaders...)
		edits.ChangeHeaders = append(edits.ChangeHeaders, o.v.ChangeHeaders...)
		if o.v.Action > v.Action {
			v = o.v
		}
	}
	v.AddHeaders, v.DeleteHeaders, v.ChangeHeaders = edits.AddHeaders, edits.DeleteHeaders, edits.ChangeHeaders
	return v
}

// NeedsBody reports whether any check reads the message body, so the
// milter keeps it.
func (e *Engine) NeedsBody() bool { return len(e.content) > 0 }
