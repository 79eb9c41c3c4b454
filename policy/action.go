package policy

import "fmt"

// Action is what happens to a message or a recipient. Actions are ordered by
// strength so that combining verdicts is a max: reject beats tempfail beats
// quarantine beats tag beats accept, and discard beats everything because it
// is the only one that ends the message for every recipient silently.
type Action uint8

const (
	// unset marks an organisation setting that inherits the global one.
	unset Action = iota
	Accept
	Tag        // accept, marked with a header
	Quarantine // accept into the MTA's hold queue
	Tempfail   // 4xx: the sender retries later
	Reject     // 5xx
	Discard    // accept and drop silently
	// invalid is what an unknown action name in the configuration decodes
	// to, so that validation can report every bad value at once.
	invalid
)

var actionNames = [...]string{
	unset:      "",
	Accept:     "accept",
	Tag:        "tag",
	Quarantine: "quarantine",
	Tempfail:   "tempfail",
	Reject:     "reject",
	Discard:    "discard",
	invalid:    "invalid",
}

func (a Action) String() string {
	if int(a) < len(actionNames) {
		return actionNames[a]
	}
	return fmt.Sprintf("Action(%d)", a)
}

// ParseAction parses an action name as written in the configuration.
func ParseAction(s string) (Action, error) {
	for a := Accept; a < invalid; a++ {
		if actionNames[a] == s {
			return a, nil
		}
	}
	return invalid, fmt.Errorf("unknown action %q (want accept, tag, quarantine, tempfail, reject or discard)", s)
}

// UnmarshalText never fails: an unknown name becomes invalid and is reported
// by Config validation together with every other problem, with its key and line.
// An empty name is unset: inherit (as check-config prints inherited settings).
func (a *Action) UnmarshalText(b []byte) error {
	if len(b) == 0 {
		*a = unset
		return nil
	}
	*a, _ = ParseAction(string(b))
	return nil
}

func (a Action) MarshalText() ([]byte, error) { return []byte(a.String()), nil }

// Ends reports whether the action ends the message: no more stages follow.
func (a Action) Ends() bool { return a == Tempfail || a == Reject || a == Discard }

// Refuses reports whether the action refuses with an SMTP error reply. At
// RCPT it refuses just that recipient; discard, by contrast, concerns the
// whole message and is carried out at end of message.
func (a Action) Refuses() bool { return a == Tempfail || a == Reject }

// Max returns the stronger of two actions.
func Max(a, b Action) Action {
	if b > a {
		return b
	}
	return a
}
