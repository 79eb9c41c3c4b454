package policy

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/mxguard/mxguard/scanners/attach"
)

// attachmentCheck refuses messages carrying files of blocked extensions
// or detected types, also inside nested parts and zip archives.
type attachmentCheck struct{ cfg *Config }

func (c attachmentCheck) Name() string { return "attachments" }

// Timeout bounds a walk of the MIME tree; it reads the body once, locally.
func (c attachmentCheck) Timeout() time.Duration { return c.cfg.Milter.ContentTimeout.Duration }

func (c attachmentCheck) Check(ctx context.Context, t *Transaction, msg *Message) (Evidence, Verdict) {
	p := c.cfg.contentFor(t)
	if len(p.blockExtensions) == 0 && len(p.blockTypes) == 0 {
		return Evidence{Result: "skipped", Detail: "no rules"}, accept
	}
	raw, _ := msg.Raw()
	rep, err := attach.Scan(ctxReader{ctx, raw}, attach.Rules{Extensions: p.blockExtensions, Types: p.blockTypes}, attach.Limits{})
	if err != nil {
		return Evidence{Result: "error", Err: err}, Trouble(InternalError, fmt.Errorf("reading the message for attachment rules: %w", err))
	}
	ev := Evidence{Result: "clean", Detail: fmt.Sprintf("%d parts", rep.Parts)}
	if len(rep.Problems) > 0 {
		ev.Detail += "; " + strings.Join(rep.Problems, "; ")
	}
	if len(rep.Findings) == 0 {
		return ev, accept
	}
	var found []string
	for _, f := range rep.Findings {
		found = append(found, f.String())
	}
	ev.Result, ev.Detail = "blocked", strings.Join(found, "; ")
	return ev, contentVerdict(p.attachmentAction, 550, "5.7.1", BlockedAttachment, "%s is not accepted", rep.Findings[0])
}

// ctxReader stops a long read when the check's deadline passes.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (r ctxReader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	return r.r.Read(p)
}

func defaultBlockedExtensions() []string { return attach.DefaultRules().Extensions }
func defaultBlockedTypes() []string      { return attach.DefaultRules().Types }

// KnownAttachmentTypes lists the type names attachments.block_types accepts.
func KnownAttachmentTypes() []string { return attach.KnownTypes() }
