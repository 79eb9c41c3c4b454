package policy

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Verdict is the outcome of one stage: what to do, what the client is told,
// why, and (at end of message) how the header changes.
type Verdict struct {
	Action   Action
	Code     int    // SMTP reply code; 0 lets the MTA answer with its own
	Enhanced string // RFC 3463 enhanced status code, e.g. "5.7.1"
	Text     string // what the client sees after the codes; starts with the Reason
	Reason   Reason
	Err      error // the internal cause, for the log only

	// End of message only.
	AddHeaders    []Header    // inserted at the top of the header, in this order
	DeleteHeaders []HeaderRef // in the order they must be deleted (last first)
	ChangeHeaders []HeaderChange
	Quarantine    string // reason handed to the MTA's hold queue
}

// Header is one header field.
type Header struct {
	Name  string
	Value string
}

// HeaderRef names one header field the way the milter protocol does
// (SMFIR_CHGHEADER): the Index-th field called Name, counting from 1.
type HeaderRef struct {
	Name  string
	Index int
}

// HeaderChange replaces the value of one header field (SMFIR_CHGHEADER);
// an Index beyond the fields of that name adds the field.
type HeaderChange struct {
	HeaderRef
	Value string
}

// Reply renders the SMTP reply, or "" when mxguard lets the MTA answer.
func (v Verdict) Reply() string {
	if v.Code == 0 {
		return ""
	}
	return fmt.Sprintf("%d %s %s", v.Code, v.Enhanced, v.Text)
}

// accept is the verdict of a stage with nothing to object to.
var accept = Verdict{Action: Accept}

// refuse builds a verdict that ends the transaction (or refuses a recipient)
// with an SMTP reply whose text starts with the reason.
func refuse(a Action, code int, enhanced string, reason Reason, format string, args ...any) Verdict {
	return Verdict{
		Action:   a,
		Code:     code,
		Enhanced: enhanced,
		Reason:   reason,
		Text:     string(reason) + ": " + printable(fmt.Sprintf(format, args...)),
	}
}

// printable replaces control characters and invalid UTF-8 with '?'.
// Addresses and HELO names come from the client and end up in SMTP replies
// and headers, where a CR or LF would start a new line of the client's
// choosing.
func printable(s string) string {
	return strings.Map(func(r rune) rune {
		if r == utf8.RuneError || unicode.IsControl(r) {
			return '?'
		}
		return r
	}, s)
}

// Trouble is the verdict when mxguard itself cannot judge or log a message:
// tempfail, never accept silently what was not judged.
func Trouble(reason Reason, err error) Verdict {
	v := refuse(Tempfail, 451, "4.3.0", reason, "mxguard cannot process this message now, try again later")
	v.Err = err
	return v
}

// BusyVerdict is the verdict for a connection beyond milter.max_sessions.
func BusyVerdict(max int) Verdict {
	return refuse(Tempfail, 451, "4.3.2", Busy, "more than %d concurrent sessions, try again later", max)
}

// reasons joins distinct non-empty reasons for headers and the log.
func joinReasons(rs []Reason) string {
	var parts []string
	seen := map[Reason]bool{}
	for _, r := range rs {
		if r != ReasonNone && !seen[r] {
			seen[r] = true
			parts = append(parts, string(r))
		}
	}
	return strings.Join(parts, ",")
}

// HeaderTooLargeVerdict refuses a message whose header exceeds
// milter.max_headers fields or milter.max_header_bytes bytes.
func HeaderTooLargeVerdict(maxFields, maxBytes int) Verdict {
	return refuse(Reject, 552, "5.3.4", HeaderTooLarge, "message header exceeds %d fields or %d bytes", maxFields, maxBytes)
}
