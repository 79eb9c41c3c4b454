// Package policy is mxguard's decision layer: the configuration (TOML,
// validated all at once), organisations and their rules, and the functions
// that turn the evidence of each milter stage into one Verdict.
//
// The package knows nothing of the milter protocol. The milter adapter builds
// a Transaction stage by stage and asks the Engine for a Verdict at each
// stage; the Engine runs the checks a stage needs (through small interfaces
// implemented in scanners/) under the stage's deadline, records every result
// as Evidence, and decides once. Decisions are pure functions of the
// configuration and the evidence, so they are table-tested without a network.
package policy
