package logstore

import "time"

// Record is one row of the transaction log: one SMTP transaction (MAIL FROM
// to end of message, or its abort), or one connection that ended without a
// MAIL FROM. It holds the evidence, not only the verdict, so an admin can
// read why a message was accepted, tagged, quarantined or rejected.
type Record struct {
	// ID is assigned by the store on the first Save and must be kept by the
	// caller: a later Save with the same ID updates the row in place.
	ID int64

	StartedAt time.Time
	EndedAt   time.Time

	QueueID    string // the MTA's queue id (macro i); empty until the MTA sent one
	ClientIP   string // as the MTA reports it, not the milter socket's peer
	ClientName string // the client's verified name as the MTA reports it
	Helo       string
	AuthUser   string // {auth_authen}; empty for unauthenticated sessions
	AuthType   string // {auth_type}
	Daemon     string // {daemon_name}: which MTA service took the mail

	MailFrom   string // envelope sender without <>; "" for the null sender
	FromHeader string
	Subject    string
	MessageID  string
	Size       int64 // header plus body bytes as the MTA passed them

	Direction    string // inbound | outbound | internal
	Organization string // the organisation the transaction was judged for

	SPF       string // SPF result (RFC 7208 section 8), "" when not checked
	SPFDomain string // the domain SPF was evaluated for
	DKIM      string // later issues
	DMARC     string // later issues
	SpamScore *float64
	Virus     string

	Action string // accept | tag | quarantine | tempfail | reject | discard | aborted
	Reason string // a reason constant, e.g. RelayDenied, SPFFail
	Reply  string // the SMTP reply given for the transaction, e.g. "550 5.7.23 ..."
	Error  string // mxguard's own trouble, for the admin (never shown to the client)

	HeadersAdded []string // "Name: value" of every header mxguard added
	Evidence     []Evidence

	Recipients []Recipient
}

// Recipient is one RCPT TO of a transaction and what became of it.
type Recipient struct {
	Address      string
	Organization string // "" for a recipient outside our domains (relay)
	Action       string
	Reason       string
	Reply        string // the reply given at RCPT when the recipient was refused
}

// Evidence is the result of one check, kept whether or not policy acted on it.
type Evidence struct {
	Check    string        `json:"check"`  // spf, relay, sender_login, ...
	Result   string        `json:"result"` // the check's own result vocabulary
	Detail   string        `json:"detail,omitempty"`
	Duration time.Duration `json:"duration_ns,omitempty"`
	Error    string        `json:"error,omitempty"`
}
