// Package e2e tests mxguard end to end, behind real MTAs: swaks and a small
// SMTP client talk to Postfix and to Sendmail on loopback, the MTA asks
// mxguard ("mxguard serve", built from this tree), and the tests check what
// the client was told, what was delivered or held, and what mxguard logged.
// Both MTAs run the same scenarios. It holds tests only; see README.md for
// what they need and how they run.
package e2e
