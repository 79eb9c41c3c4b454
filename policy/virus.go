package policy

import (
	"context"
	"fmt"
	"time"

	"github.com/mxguard/mxguard/scanners/clamd"
)

// virusCheck scans the message with clamd.
type virusCheck struct {
	cfg    *Config
	client *clamd.Client
}

func newVirusCheck(cfg *Config) *virusCheck {
	return &virusCheck{cfg: cfg, client: &clamd.Client{Address: cfg.Virus.Address, MaxSize: cfg.Virus.MaxSize.Bytes}}
}

func (c *virusCheck) Name() string           { return "virus" }
func (c *virusCheck) Timeout() time.Duration { return c.cfg.Virus.Timeout.Duration }

func (c *virusCheck) Check(ctx context.Context, t *Transaction, msg *Message) (Evidence, Verdict) {
	raw, size := msg.Raw()
	res := c.client.Scan(ctx, raw, size)
	ev := Evidence{Result: string(res.Result), Detail: res.Signature, Err: res.Err}
	t.virus = string(res.Result)
	if res.Result == clamd.Infected {
		t.virus = res.Signature
	}
	switch res.Result {
	case clamd.Clean:
		ev.Detail = "clamd"
		return ev, Verdict{AddHeaders: []Header{{Name: "X-Virus-Scanned", Value: "clamd at " + c.cfg.Hostname + "; clean"}}}
	case clamd.Skipped:
		ev.Detail = fmt.Sprintf("skipped: too large (%d bytes, virus.max_size %s)", size, c.cfg.Virus.MaxSize)
		return ev, accept
	case clamd.Infected:
		a := c.cfg.contentFor(t).virusAction
		return ev, contentVerdict(a, 554, "5.7.1", Virus, "message contains a virus (%s)", res.Signature)
	}
	if ev.Detail == "" {
		ev.Detail = res.Detail
	}
	return ev, scanFailed(c.cfg.Virus.OnError, VirusScanFailed, fmt.Errorf("clamd at %s: %w", c.cfg.Virus.Address, res.Err))
}

// contentVerdict is the verdict of a content check that objects with
// action a: a refusal carries the reply, quarantine and tag the reason.
func contentVerdict(a Action, code int, enhanced string, reason Reason, format string, args ...any) Verdict {
	switch a {
	case Accept:
		return accept
	case Reject, Tempfail:
		if a == Tempfail && code/100 != 4 {
			code, enhanced = 451, "4.7.1" // an admin chose tempfail for a permanent finding
		}
		return refuse(a, code, enhanced, reason, format, args...)
	}
	v := refuse(a, 0, "", reason, format, args...)
	v.Code, v.Enhanced = 0, ""
	return v
}

// scanFailed is the verdict when an engine could not judge the message:
// its on_error action, tempfail or accept, with the cause in the log.
func scanFailed(onError Action, reason Reason, err error) Verdict {
	if onError == Accept {
		return Verdict{Action: Accept, Err: err}
	}
	v := Trouble(reason, err)
	return v
}
