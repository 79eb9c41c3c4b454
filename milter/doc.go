// Package milter is mxguard's adapter to the milter protocol, on
// github.com/d--j/go-milter. It guards the frames MTAs send, recovers panics
// per session, turns macros into typed fields, asks package policy for a
// Verdict at each stage, writes the transaction log row before the final
// reply, and turns verdicts into milter responses in exactly one place
// (response in reply.go). It knows nothing of mail policy.
package milter
