package milter

import (
	"github.com/d--j/go-milter"

	"github.com/mxguard/mxguard/policy"
)

// stage is where in the transaction a verdict is answered.
type stage int

const (
	atConnect stage = iota
	atMail
	atRcpt
	atHeader
	atEOM
)

// response is the one place that turns a verdict into a milter response.
//
// Before end of message, anything that does not refuse is "continue", never
// "accept": Postfix (milter8.c) and Sendmail take SMFIR_ACCEPT at any stage
// as "accept the whole message and send no more events", which would skip
// the end-of-message checks and the log row. Discard is likewise carried out
// at end of message, since at RCPT it would drop every recipient.
func response(v policy.Verdict, at stage) *milter.Response {
	if v.Action.Refuses() {
		if v.Code != 0 {
			if r, err := milter.RejectWithCodeAndReason(uint16(v.Code), v.Enhanced+" "+v.Text); err == nil {
				return r
			}
		}
		if v.Action == policy.Reject {
			return milter.RespReject
		}
		return milter.RespTempFail
	}
	if at != atEOM {
		return milter.RespContinue
	}
	if v.Action == policy.Discard {
		return milter.RespDiscard
	}
	return milter.RespAccept
}
