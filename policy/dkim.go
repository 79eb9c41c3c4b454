package policy

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/mxguard/mxguard/scanners/dkim"
)

// TXTResolver looks up TXT records: DKIM keys and DMARC records.
type TXTResolver = dkim.TXTResolver

// UseDNS turns on the checks that need DNS beyond SPF: DKIM verification
// (when dkim.verify is on) and DMARC (when dmarc.enabled is).
func (e *Engine) UseDNS(res TXTResolver) {
	e.dns = res
	if e.cfg.DKIM.Verify || e.cfg.DMARC.Enabled {
		e.content = append(e.content, dkimCheck{cfg: e.cfg, res: res})
	}
}

// dkimCheck verifies every DKIM signature of inbound mail. Its results go
// into the transaction, where DMARC and Authentication-Results read them.
type dkimCheck struct {
	cfg *Config
	res TXTResolver
}

func (c dkimCheck) Name() string           { return "dkim" }
func (c dkimCheck) Timeout() time.Duration { return c.cfg.DKIM.Timeout.Duration }

func (c dkimCheck) Check(ctx context.Context, t *Transaction, msg *Message) (Evidence, Verdict) {
	if t.OurUser() {
		return Evidence{Result: "skipped", Detail: "our user's mail is signed, not verified"}, accept
	}
	raw, _ := msg.Raw()
	sigs, err := dkim.Verify(ctx, c.res, raw)
	if err != nil {
		return Evidence{Result: "error", Err: err}, Trouble(InternalError, fmt.Errorf("dkim: %w", err))
	}
	t.dkim, t.dkimVerified = sigs, true
	return dkimEvidence(sigs), accept
}

// dkimEvidence summarises the signatures: the best result, and each
// signature's domain, selector and result.
func dkimEvidence(sigs []dkim.Signature) Evidence {
	if len(sigs) == 0 {
		return Evidence{Result: string(dkim.None), Detail: "no signature"}
	}
	rank := map[dkim.Result]int{dkim.Pass: 6, dkim.TempError: 5, dkim.Fail: 4, dkim.Policy: 3, dkim.PermError: 2, dkim.Neutral: 1}
	best := sigs[0].Result
	var parts []string
	var errs []error
	for _, s := range sigs {
		if rank[s.Result] > rank[best] {
			best = s.Result
		}
		part := fmt.Sprintf("d=%s s=%s %s", s.Domain, s.Selector, s.Result)
		if s.Err != nil {
			part += " (" + s.Err.Error() + ")"
			errs = append(errs, s.Err)
		}
		parts = append(parts, part)
	}
	ev := Evidence{Result: string(best), Detail: strings.Join(parts, "; ")}
	if best == dkim.TempError && len(errs) > 0 {
		ev.Err = errs[0]
	}
	return ev
}

// sign DKIM-signs our user's message as it will leave the MTA: the
// incoming header with every edit of v applied, then the body. It returns
// the DKIM-Signature field to put on top, or nothing when no key covers
// the From domain.
func (e *Engine) sign(t *Transaction, msg *Message, v Verdict) (*Header, Evidence, error) {
	from, err := singleFromDomain(msg)
	if err != nil {
		return nil, Evidence{}, nil // nothing to sign as; DMARC would say why
	}
	key := e.cfg.SigningKey(from)
	if key == nil {
		return nil, Evidence{}, nil
	}
	raw, _ := rawMessage(editedHeaders(msg.Headers, v), msg.Body)
	start := time.Now()
	value, err := dkim.Sign(key, raw)
	ev := Evidence{Check: "dkim_sign", Result: "signed", Detail: fmt.Sprintf("d=%s s=%s", key.Domain, key.Selector), Duration: time.Since(start)}
	if err != nil {
		ev.Result, ev.Err = "error", err
		return nil, ev, err
	}
	return &Header{Name: "DKIM-Signature", Value: value}, ev, nil
}

// editedHeaders applies the header edits of v to headers as the MTA will:
// deletions, changes, then insertions at the top.
func editedHeaders(headers []Header, v Verdict) []Header {
	out := append([]Header(nil), headers...)
	nth := func(name string, n int) int {
		for i, h := range out {
			if strings.EqualFold(h.Name, name) {
				if n--; n == 0 {
					return i
				}
			}
		}
		return -1
	}
	for _, d := range v.DeleteHeaders {
		if i := nth(d.Name, d.Index); i >= 0 {
			out = append(out[:i], out[i+1:]...)
		}
	}
	for _, c := range v.ChangeHeaders {
		if i := nth(c.Name, c.Index); i >= 0 {
			out[i].Value = " " + c.Value
		} else {
			out = append(out, Header{Name: c.Name, Value: " " + c.Value})
		}
	}
	top := make([]Header, 0, len(v.AddHeaders)+len(out))
	for _, h := range v.AddHeaders {
		top = append(top, Header{Name: h.Name, Value: " " + h.Value})
	}
	return append(top, out...)
}
