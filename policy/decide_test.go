package policy

import (
	"context"
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/mxguard/mxguard/scanners/spf"
)

const testConfig = `
hostname = "mx.example.com"
[milter]
max_recipients = 3
[relay]
trusted_networks = ["10.0.0.0/8"]
block_networks = ["198.51.100.0/24"]
[relay.sender_login]
"alice" = ["alice@example.com"]
"bob@example.com" = ["@example.net"]
[spf]
fail = "reject"
softfail = "tag"
neutral = "accept"
none = "accept"
temperror = "tempfail"
permerror = "reject"
[[organization]]
name = "example"
domains = ["example.com", "example.net"]
[[organization]]
name = "lenient"
domains = ["lenient.test"]
[organization.spf]
fail = "quarantine"
softfail = "discard"
[[organization]]
name = "tagger"
domains = ["tagger.test"]
[organization.spf]
fail = "tag"
`

// fakeSPF returns a fixed result and counts its calls.
type fakeSPF struct {
	result spf.Result
	calls  atomic.Int32
}

func (f *fakeSPF) Check(ctx context.Context, ip netip.Addr, helo, sender string) spf.Evidence {
	f.calls.Add(1)
	return spf.Evidence{Result: f.result, Domain: spf.Domain(helo, sender)}
}

func newTestEngine(t *testing.T, r spf.Result) (*Engine, *fakeSPF) {
	t.Helper()
	cfg, err := Parse("test", []byte(testConfig))
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeSPF{result: r}
	return NewEngine(cfg, f), f
}

func TestConnect(t *testing.T) {
	e, _ := newTestEngine(t, spf.Pass)
	tests := []struct {
		ip               string
		trusted, blocked bool
		reply            string
	}{
		{"10.1.2.3", true, false, ""},
		{"192.0.2.1", false, false, ""},
		{"198.51.100.7", false, true, "554 5.7.1 BlockedNetwork: "},
		{"::ffff:10.0.0.1", true, false, ""},
		{"", true, false, ""}, // local submission: no IP
	}
	for _, tt := range tests {
		conn := &Connection{}
		if tt.ip != "" {
			conn.ClientIP = netip.MustParseAddr(tt.ip)
		}
		v := e.Connect(conn)
		if conn.Trusted != tt.trusted || conn.Blocked != tt.blocked || !strings.HasPrefix(v.Reply(), tt.reply) || (tt.reply == "") != (v.Action == Accept) {
			t.Errorf("%s: trusted=%v blocked=%v reply=%q; want %v %v %q", tt.ip, conn.Trusted, conn.Blocked, v.Reply(), tt.trusted, tt.blocked, tt.reply)
		}
	}
}

// TestMail covers sender-login and spoofing, the verdicts given at MAIL FROM.
func TestMail(t *testing.T) {
	tests := []struct {
		name      string
		ip        string
		auth      string
		from      string
		spf       spf.Result
		reply     string // "" = accepted
		spfCalled bool
	}{
		{"auth user own address", "192.0.2.1", "alice", "alice@example.com", spf.Fail, "", false},
		{"auth user other address", "192.0.2.1", "alice", "bob@example.com", spf.Pass, "553 5.7.1 SenderLoginMismatch: ", false},
		{"auth user case-insensitive", "192.0.2.1", "alice", "Alice@Example.COM", spf.Pass, "", false},
		{"login that is an address owns it", "192.0.2.1", "bob@example.com", "bob@example.com", spf.Pass, "", false},
		{"domain pattern", "192.0.2.1", "bob@example.com", "anyone@example.net", spf.Pass, "", false},
		{"domain pattern, other domain", "192.0.2.1", "bob@example.com", "x@example.org", spf.Pass, "553 5.7.1", false},
		{"unmapped user", "192.0.2.1", "mallory", "alice@example.com", spf.Pass, "553 5.7.1", false},
		{"auth null sender", "192.0.2.1", "alice", "", spf.Pass, "", false},
		{"trusted, any sender", "10.0.0.5", "", "ceo@example.com", spf.Fail, "", false},
		{"spoof, spf pass", "192.0.2.1", "", "ceo@example.com", spf.Pass, "", true},
		{"spoof, spf fail gives the SPF reply", "192.0.2.1", "", "ceo@example.com", spf.Fail, "550 5.7.23 SPFFail: ", true},
		{"spoof, spf softfail", "192.0.2.1", "", "ceo@example.com", spf.SoftFail, "550 5.7.1 SpoofedSender: ", true},
		{"spoof, spf none", "192.0.2.1", "", "ceo@example.net", spf.None, "550 5.7.1 SpoofedSender: ", true},
		{"spoof, spf temperror", "192.0.2.1", "", "ceo@example.com", spf.TempError, "451 4.7.24 SPFTempError: ", true},
		{"foreign sender: spf started, judged at RCPT", "192.0.2.1", "", "someone@example.org", spf.Fail, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, f := newTestEngine(t, tt.spf)
			conn := &Connection{ClientIP: netip.MustParseAddr(tt.ip), Helo: "client.test"}
			e.Connect(conn)
			tr := e.NewTransaction(conn)
			tr.AuthUser, tr.MailFrom = tt.auth, tt.from
			v := e.Mail(context.Background(), tr)
			if !strings.HasPrefix(v.Reply(), tt.reply) || (tt.reply == "") != (v.Action == Accept) {
				t.Errorf("reply %q (action %v); want prefix %q", v.Reply(), v.Action, tt.reply)
			}
			if _, ok := tr.SPF(context.Background()); ok != tt.spfCalled || (f.calls.Load() == 1) != tt.spfCalled {
				t.Errorf("spf started=%v calls=%d; want %v", ok, f.calls.Load(), tt.spfCalled)
			}
		})
	}
}

// TestRcpt covers relay control and SPF actions per recipient organisation.
func TestRcpt(t *testing.T) {
	tests := []struct {
		name   string
		ip     string
		auth   string
		spf    spf.Result
		rcpt   string
		action Action
		reply  string
	}{
		{"inbound clean", "192.0.2.1", "", spf.Pass, "user@example.com", Accept, ""},
		{"relay denied", "192.0.2.1", "", spf.Pass, "user@elsewhere.test", Reject, "554 5.7.1 RelayDenied: relay access denied for <user@elsewhere.test>"},
		{"authenticated relay", "192.0.2.1", "alice", spf.Fail, "user@elsewhere.test", Accept, ""},
		{"trusted relay", "10.9.9.9", "", spf.Fail, "user@elsewhere.test", Accept, ""},
		{"spf fail", "192.0.2.1", "", spf.Fail, "user@example.com", Reject, "550 5.7.23 SPFFail: SPF fail for sender.test"},
		{"spf softfail tags", "192.0.2.1", "", spf.SoftFail, "user@example.com", Tag, ""},
		{"spf neutral", "192.0.2.1", "", spf.Neutral, "user@example.com", Accept, ""},
		{"spf none", "192.0.2.1", "", spf.None, "user@example.com", Accept, ""},
		{"spf temperror", "192.0.2.1", "", spf.TempError, "user@example.com", Tempfail, "451 4.7.24 SPFTempError: "},
		{"spf permerror rejected by policy", "192.0.2.1", "", spf.PermError, "user@example.com", Reject, "550 5.7.24 SPFPermError: "},
		{"org override: fail quarantines", "192.0.2.1", "", spf.Fail, "user@lenient.test", Quarantine, ""},
		{"org override: softfail discards", "192.0.2.1", "", spf.SoftFail, "user@lenient.test", Discard, ""},
		{"org inherits global: temperror", "192.0.2.1", "", spf.TempError, "user@lenient.test", Tempfail, "451 4.7.24"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, _ := newTestEngine(t, tt.spf)
			conn := &Connection{ClientIP: netip.MustParseAddr(tt.ip), Helo: "client.test"}
			e.Connect(conn)
			tr := e.NewTransaction(conn)
			tr.AuthUser, tr.MailFrom = tt.auth, "someone@sender.test"
			if tt.auth != "" {
				tr.MailFrom = tt.auth + "@example.com"
			}
			if v := e.Mail(context.Background(), tr); v.Action != Accept {
				t.Fatalf("mail refused: %s", v.Reply())
			}
			v := e.Rcpt(context.Background(), tr, tt.rcpt)
			if v.Action != tt.action || !strings.HasPrefix(v.Reply(), tt.reply) || (tt.reply == "") != (v.Code == 0) {
				t.Errorf("got %v %q; want %v %q", v.Action, v.Reply(), tt.action, tt.reply)
			}
			if len(tr.Recipients) != 1 || tr.Recipients[0].Verdict.Action != v.Action {
				t.Errorf("recipient not recorded: %+v", tr.Recipients)
			}
		})
	}
}

func TestTooManyRecipients(t *testing.T) {
	e, _ := newTestEngine(t, spf.Pass)
	conn := &Connection{ClientIP: netip.MustParseAddr("192.0.2.1")}
	e.Connect(conn)
	tr := e.NewTransaction(conn)
	tr.MailFrom = "a@sender.test"
	e.Mail(context.Background(), tr)
	e.Rcpt(context.Background(), tr, "x@elsewhere.test") // refused: does not count
	for i := 0; i < 3; i++ {
		if v := e.Rcpt(context.Background(), tr, "u@example.com"); v.Action != Accept {
			t.Fatalf("recipient %d refused: %s", i, v.Reply())
		}
	}
	if v := e.Rcpt(context.Background(), tr, "u@example.com"); !strings.HasPrefix(v.Reply(), "452 4.5.3 TooManyRecipients") {
		t.Errorf("4th accepted recipient: %q; want 452 4.5.3", v.Reply())
	}

	local := &Connection{} // a local submission: no client IP
	e.Connect(local)
	tr = e.NewTransaction(local)
	e.Mail(context.Background(), tr)
	for i := 0; i < 5; i++ {
		if v := e.Rcpt(context.Background(), tr, "u@example.com"); v.Action != Accept {
			t.Fatalf("local submission, recipient %d refused: %s", i, v.Reply())
		}
	}
}

// TestDirectionAndOrganization checks how a transaction is classified.
func TestDirectionAndOrganization(t *testing.T) {
	e, _ := newTestEngine(t, spf.Pass)
	tests := []struct {
		ip, auth, from string
		rcpts          []string
		dir            Direction
		org            string
	}{
		{"192.0.2.1", "", "x@sender.test", []string{"u@lenient.test", "u@example.com"}, Inbound, "lenient"},
		{"192.0.2.1", "alice", "alice@example.com", []string{"u@elsewhere.test"}, Outbound, "example"},
		{"10.0.0.1", "", "app@example.net", []string{"u@example.com"}, Internal, "example"},
		{"192.0.2.1", "", "x@sender.test", []string{"u@elsewhere.test"}, Inbound, ""},
	}
	for _, tt := range tests {
		conn := &Connection{ClientIP: netip.MustParseAddr(tt.ip)}
		e.Connect(conn)
		tr := e.NewTransaction(conn)
		tr.AuthUser, tr.MailFrom = tt.auth, tt.from
		e.Mail(context.Background(), tr)
		for _, r := range tt.rcpts {
			e.Rcpt(context.Background(), tr, r)
		}
		org := ""
		if o := tr.Organization(e.Config()); o != nil {
			org = o.Name
		}
		if tr.Direction() != tt.dir || org != tt.org {
			t.Errorf("%v: direction %s org %q; want %s %q", tt.rcpts, tr.Direction(), org, tt.dir, tt.org)
		}
	}
}

// TestEndOfMessage covers combining recipients into the message verdict and
// the header edits.
func TestEndOfMessage(t *testing.T) {
	tests := []struct {
		name    string
		spf     spf.Result
		auth    string
		rcpts   []string
		headers []Header
		action  Action
		ar      string // Authentication-Results value
		verdict string // X-MXGuard-Verdict value, "" = none
		deletes []HeaderRef
	}{
		{
			name: "clean inbound", spf: spf.Pass, rcpts: []string{"u@example.com"},
			action: Accept, ar: "mx.example.com; spf=pass smtp.helo=client.test smtp.mailfrom=x@sender.test",
		},
		{
			name: "softfail tagged", spf: spf.SoftFail, rcpts: []string{"u@example.com"},
			action: Tag, ar: "mx.example.com; spf=softfail smtp.helo=client.test smtp.mailfrom=x@sender.test",
			verdict: "tag; reasons=SPFSoftFail",
		},
		{
			name: "strictest of two organisations wins", spf: spf.Fail, rcpts: []string{"u@tagger.test", "u@lenient.test"},
			action: Quarantine, ar: "mx.example.com; spf=fail smtp.helo=client.test smtp.mailfrom=x@sender.test",
			verdict: "quarantine; reasons=SPFFail",
		},
		{
			name: "authenticated", spf: spf.Fail, auth: "alice", rcpts: []string{"u@elsewhere.test"},
			action: Accept, ar: "mx.example.com; auth=pass smtp.auth=alice",
		},
		{
			name: "forged results removed last first, others kept", spf: spf.Pass, rcpts: []string{"u@example.com"},
			headers: []Header{
				{"Authentication-Results", " MX.example.com; spf=pass"},
				{"Subject", " hi"},
				{"Authentication-Results", " other.example; dkim=pass"},
				{"authentication-results", " (comment) mx.example.com. 1; none"},
				{"X-MXGuard-Verdict", " accept"},
				{"Authentication-Results", " mx.example.com"},
			},
			action: Accept, ar: "mx.example.com; spf=pass smtp.helo=client.test smtp.mailfrom=x@sender.test",
			deletes: []HeaderRef{{"Authentication-Results", 4}, {"authentication-results", 3}, {"Authentication-Results", 1}, {"X-MXGuard-Verdict", 1}}, // per name, last first
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, _ := newTestEngine(t, tt.spf)
			conn := &Connection{ClientIP: netip.MustParseAddr("192.0.2.1"), Helo: "client.test"}
			e.Connect(conn)
			tr := e.NewTransaction(conn)
			tr.AuthUser, tr.MailFrom = tt.auth, "x@sender.test"
			if tt.auth != "" {
				tr.MailFrom = "alice@example.com"
			}
			e.Mail(context.Background(), tr)
			for _, r := range tt.rcpts {
				if v := e.Rcpt(context.Background(), tr, r); v.Action.Refuses() {
					t.Fatalf("%s refused: %s", r, v.Reply())
				}
			}
			v := e.EndOfMessage(context.Background(), tr, &Message{Headers: tt.headers})
			if v.Action != tt.action {
				t.Errorf("action %v; want %v", v.Action, tt.action)
			}
			want := []Header{{"Authentication-Results", tt.ar}}
			if tt.verdict != "" {
				want = append(want, Header{VerdictHeader, tt.verdict})
			}
			if tt.auth != "" {
				want[0].Value = "mx.example.com; auth=pass smtp.auth=alice"
			}
			if !reflect.DeepEqual(v.AddHeaders, want) {
				t.Errorf("headers added %q; want %q", v.AddHeaders, want)
			}
			if !reflect.DeepEqual(v.DeleteHeaders, tt.deletes) {
				t.Errorf("headers deleted %v; want %v", v.DeleteHeaders, tt.deletes)
			}
			if tt.action == Quarantine && !strings.Contains(v.Quarantine, "SPFFail") {
				t.Errorf("quarantine reason %q lacks the reason", v.Quarantine)
			}
		})
	}
}

// TestSPFWaitHonoursContext: a stage never waits past its deadline for a
// slow SPF check; it gets a temperror.
func TestSPFWaitHonoursContext(t *testing.T) {
	p := &pendingSPF{done: make(chan struct{})}
	ctx, cancel := context.WithCancelCause(context.Background())
	cancel(errors.New("stage deadline"))
	if ev := p.wait(ctx); ev.Result != spf.TempError || ev.Err == nil || ev.Err.Error() != "stage deadline" {
		t.Errorf("got %+v; want temperror with the cause", ev)
	}
}

func TestActionOrder(t *testing.T) {
	order := []Action{Accept, Tag, Quarantine, Tempfail, Reject, Discard}
	for i := 1; i < len(order); i++ {
		if Max(order[i-1], order[i]) != order[i] || Max(order[i], order[i-1]) != order[i] {
			t.Errorf("%v should beat %v", order[i], order[i-1])
		}
	}
	for _, a := range order {
		if got, err := ParseAction(a.String()); got != a || err != nil {
			t.Errorf("round trip of %v: %v %v", a, got, err)
		}
	}
}

type panickySPF struct{}

func (panickySPF) Check(context.Context, netip.Addr, string, string) spf.Evidence { panic("boom") }

// TestSPFPanicIsTempError: a panicking check must not end the daemon, and
// the message is tempfailed rather than judged.
func TestSPFPanicIsTempError(t *testing.T) {
	e, _ := newTestEngine(t, spf.Pass)
	e.spf = panickySPF{}
	conn := &Connection{ClientIP: netip.MustParseAddr("192.0.2.1")}
	e.Connect(conn)
	tr := e.NewTransaction(conn)
	tr.MailFrom = "x@sender.test"
	e.Mail(context.Background(), tr)
	v := e.Rcpt(context.Background(), tr, "u@example.com")
	if !strings.HasPrefix(v.Reply(), "451 4.7.24") || v.Err == nil || !strings.Contains(v.Err.Error(), "panic") {
		t.Errorf("got %q (%v); want a 451 4.7.24 tempfail naming the panic", v.Reply(), v.Err)
	}
}

// TestClientTextCannotInjectLines: CR, LF and other control characters
// from the client never reach a header or a reply as such.
func TestClientTextCannotInjectLines(t *testing.T) {
	e, _ := newTestEngine(t, spf.Pass)
	conn := &Connection{ClientIP: netip.MustParseAddr("192.0.2.1"), Helo: "evil\r\nX-Injected: 1"}
	e.Connect(conn)
	tr := e.NewTransaction(conn)
	tr.MailFrom = "a\nb@sender.test"
	e.Mail(context.Background(), tr)
	refused := e.Rcpt(context.Background(), tr, "x\r\n250 ok@elsewhere.test")
	e.Rcpt(context.Background(), tr, "u@example.com")
	v := e.EndOfMessage(context.Background(), tr, &Message{})
	for _, s := range []string{refused.Reply(), v.AddHeaders[0].Value} {
		if strings.ContainsAny(s, "\r\n\x00") {
			t.Errorf("control characters passed through: %q", s)
		}
	}
	if !strings.Contains(v.AddHeaders[0].Value, "evil??X-Injected") {
		t.Errorf("HELO not kept readable: %q", v.AddHeaders[0].Value)
	}
}
