//go:build race

package e2e

// Under "go test -race" (make test) mxguard is built with the race detector
// too: the real daemon behind a real MTA is where races would show, and the
// build reuses the packages the other tests' race builds compiled.
func init() { raceBuild = true }
