package web

import (
	"context"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/mxguard/mxguard/logstore"
	"github.com/mxguard/mxguard/policy"
	"github.com/mxguard/mxguard/quarantine"
)

func TestMain(m *testing.M) {
	BcryptCost = bcrypt.MinCost // the tests log in hundreds of times
	os.Exit(m.Run())
}

// clock is a settable clock for session expiry and throttling.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// heldQueue is a hold queue in memory, standing in for Postfix.
type heldQueue struct {
	mu                sync.Mutex
	msgs              []quarantine.Message
	released, deleted []string
}

func (q *heldQueue) Held(context.Context) ([]quarantine.Message, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return slices.Clone(q.msgs), nil
}

func (q *heldQueue) Release(_ context.Context, id string) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.released = append(q.released, id)
	q.drop(id)
	return nil
}

func (q *heldQueue) Delete(_ context.Context, id string) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.deleted = append(q.deleted, id)
	q.drop(id)
	return nil
}

func (q *heldQueue) drop(id string) {
	q.msgs = slices.DeleteFunc(q.msgs, func(m quarantine.Message) bool { return m.QueueID == id })
}

func (q *heldQueue) done() (released, deleted []string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return slices.Clone(q.released), slices.Clone(q.deleted)
}

// Test accounts, all with the same password.
const (
	password     = "correct horse battery"
	globalAdmin  = "root@ops.test"
	exampleAdmin = "admin@example.com"
	exampleView  = "viewer@example.com"
	acmeAdmin    = "admin@acme.test"
)

// fixture is a console over a log with transactions of two organisations
// and one of none, a hold queue with a message of each, and accounts.
type fixture struct {
	t     *testing.T
	srv   *Server
	ts    *httptest.Server
	clock *clock
	store *logstore.Store
	acc   *Accounts
	queue *heldQueue
	recs  map[string]*logstore.Record
	cfg   policy.WebConfig
}

// hostileSubject and hostileSender are text a sender chose to attack the
// console with.
const (
	hostileSubject = "<script>alert('subject')</script>\x1b[31mred\x00\u202eevil"
	hostileSender  = "<img src=x onerror=alert(1)>@evil.test"
)

func newFixture(t *testing.T, configure ...func(*policy.WebConfig)) *fixture {
	t.Helper()
	dir := t.TempDir()
	now := time.Date(2026, 11, 23, 12, 30, 0, 0, time.UTC)
	f := &fixture{t: t, clock: &clock{t: now}, recs: map[string]*logstore.Record{}}
	var err error
	f.store, err = logstore.Open(logstore.Options{Path: filepath.Join(dir, "log.db")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.store.Close() })
	at := func(d time.Duration) time.Time { return now.Add(-d) }
	spf := func(result, domain string) []logstore.Evidence {
		return []logstore.Evidence{{Check: "client", Result: "untrusted", Detail: "203.0.113.9"},
			{Check: "spf", Result: result, Detail: domain, Duration: 420 * time.Microsecond}}
	}
	recs := []struct {
		name string
		r    *logstore.Record
	}{
		{"exampleAccept", &logstore.Record{StartedAt: at(3 * time.Hour), EndedAt: at(3 * time.Hour), QueueID: "4A1B2C3D4E", ClientIP: "192.0.2.25",
			Helo: "mail.sender.test", MailFrom: "news@sender.test", Subject: "June newsletter", Direction: "inbound", Organization: "example",
			SPF: "pass", SPFDomain: "sender.test", Action: "accept", Evidence: spf("pass", "sender.test"),
			HeadersAdded: []string{"Authentication-Results: mx.example.com; spf=pass smtp.mailfrom=news@sender.test"},
			Recipients:   []logstore.Recipient{{Address: "bob@example.com", Organization: "example", Action: "accept"}}}},
		{"exampleHeld", &logstore.Record{StartedAt: at(2 * time.Hour), EndedAt: at(2 * time.Hour), QueueID: "C648F988526", ClientIP: "203.0.113.9",
			MailFrom: "billing@sender.test", Subject: "Invoice 2291 overdue", Direction: "inbound", Organization: "example",
			SPF: "fail", SPFDomain: "sender.test", Action: "quarantine", Reason: "SPFFail", Evidence: spf("fail", "sender.test"),
			HeadersAdded: []string{"X-MXGuard-Verdict: quarantine; reasons=SPFFail"},
			Recipients:   []logstore.Recipient{{Address: "carol@example.com", Organization: "example", Action: "quarantine", Reason: "SPFFail"}}}},
		{"acmeReject", &logstore.Record{StartedAt: at(90 * time.Minute), EndedAt: at(90 * time.Minute), QueueID: "ACME5ECRE7", ClientIP: "203.0.113.9",
			MailFrom: "secret-partner@acme-vendor.test", Subject: "ACME merger secret", Direction: "inbound", Organization: "acme",
			SPF: "fail", SPFDomain: "acme-vendor.test", Action: "reject", Reason: "SPFFail", Reply: "550 5.7.23 SPFFail",
			Evidence:   spf("fail", "acme-vendor.test"),
			Recipients: []logstore.Recipient{{Address: "dave@acme.test", Organization: "acme", Action: "reject", Reason: "SPFFail"}}}},
		{"acmeHeld", &logstore.Record{StartedAt: at(80 * time.Minute), EndedAt: at(80 * time.Minute), QueueID: "D00DFEED42", ClientIP: "203.0.113.9",
			MailFrom: "spam@acme-vendor.test", Subject: "ACME held secret", Direction: "inbound", Organization: "acme",
			Action: "quarantine", Reason: "SpamQuarantine", Evidence: spf("none", "acme-vendor.test"),
			Recipients: []logstore.Recipient{{Address: "erin@acme.test", Organization: "acme", Action: "quarantine", Reason: "SpamQuarantine"}}}},
		{"relay", &logstore.Record{StartedAt: at(70 * time.Minute), EndedAt: at(70 * time.Minute), ClientIP: "198.51.100.7",
			MailFrom: "x@relay.test", Direction: "inbound", Action: "reject", Reason: "RelayDenied", Evidence: spf("none", "relay.test"),
			Recipients: []logstore.Recipient{{Address: "someone@elsewhere.test", Action: "reject", Reason: "RelayDenied"}}}},
		{"hostile", &logstore.Record{StartedAt: at(60 * time.Minute), EndedAt: at(60 * time.Minute), QueueID: "BADBAD1234", ClientIP: "203.0.113.66",
			Helo: "<b>helo</b>", MailFrom: hostileSender, FromHeader: "\"<script>x</script>\" <a@evil.test>", Subject: hostileSubject,
			Direction: "inbound", Organization: "example", Action: "reject", Reason: "SPFFail", Reply: "550 5.7.23 <script>reply</script>",
			Evidence:     []logstore.Evidence{{Check: "spf", Result: "fail", Detail: "<script>detail</script>"}},
			HeadersAdded: []string{"X-Evil: <script>header</script>"},
			Recipients:   []logstore.Recipient{{Address: "<script>rcpt</script>@example.com", Organization: "example", Action: "reject", Reason: "SPFFail"}}}},
	}
	for _, r := range recs {
		if err := f.store.Save(t.Context(), r.r); err != nil {
			t.Fatal(err)
		}
		f.recs[r.name] = r.r
	}
	f.queue = &heldQueue{msgs: []quarantine.Message{
		{QueueID: "C648F988526", Arrival: at(2 * time.Hour), Sender: "billing@sender.test", Recipients: []string{"carol@example.com"}},
		{QueueID: "D00DFEED42", Arrival: at(80 * time.Minute), Sender: "spam@acme-vendor.test", Recipients: []string{"erin@acme.test"}},
		{QueueID: "1E9C4988022", Arrival: at(10 * time.Minute), Recipients: []string{"postmaster@example.com"}}, // not in the log
	}}
	f.acc, err = OpenAccounts(filepath.Join(dir, "web.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.acc.Close() })
	for _, u := range []struct{ email, org, role string }{
		{globalAdmin, "", RoleAdmin}, {exampleAdmin, "example", RoleAdmin}, {exampleView, "example", RoleViewer}, {acmeAdmin, "acme", RoleAdmin},
	} {
		if _, err := f.acc.AddUser(t.Context(), u.email, u.org, u.role, password, now); err != nil {
			t.Fatal(err)
		}
	}
	f.cfg = policy.Default().Web
	f.cfg.LoginAttempts = 3
	for _, c := range configure {
		c(&f.cfg)
	}
	f.srv, err = New(Options{Config: f.cfg, Organizations: []string{"acme", "example"}, Accounts: f.acc, Log: f.store,
		MTA: f.queue, Now: f.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	f.ts = httptest.NewServer(f.srv.Handler())
	t.Cleanup(f.ts.Close)
	return f
}

// browser is one user agent with its cookies; it does not follow
// redirects, so that tests see them.
type browser struct {
	f   *fixture
	c   *http.Client
	hdr http.Header // added to every request
}

func (f *fixture) browser() *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{f: f, hdr: http.Header{}, c: &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}}
}

// response is what a request got.
type response struct {
	status int
	header http.Header
	body   string
}

func (b *browser) do(method, path string, form url.Values, hdr ...string) response {
	b.f.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, b.f.ts.URL+path, body)
	if err != nil {
		b.f.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for k, v := range b.hdr {
		req.Header[k] = v
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := b.c.Do(req)
	if err != nil {
		b.f.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return response{resp.StatusCode, resp.Header, string(data)}
}

func (b *browser) get(path string, hdr ...string) response { return b.do("GET", path, nil, hdr...) }

func (b *browser) post(path string, form url.Values, hdr ...string) response {
	return b.do("POST", path, form, hdr...)
}

// login logs in and fails the test unless it worked.
func (b *browser) login(email string) *browser {
	b.f.t.Helper()
	r := b.post("/login", url.Values{"email": {email}, "password": {password}})
	if r.status != http.StatusSeeOther || r.header.Get("Location") != "/" {
		b.f.t.Fatalf("login %s: %d %s\n%s", email, r.status, r.header.Get("Location"), r.body)
	}
	return b
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// csrf returns the CSRF token of the session, from a page's forms.
func (b *browser) csrf() string {
	b.f.t.Helper()
	r := b.get("/")
	m := csrfRE.FindStringSubmatch(r.body)
	if m == nil {
		b.f.t.Fatalf("no CSRF token on the dashboard: %d\n%s", r.status, r.body)
	}
	return m[1]
}

// cookie returns the session cookie's value.
func (b *browser) cookie() string {
	u, _ := url.Parse(b.f.ts.URL)
	for _, c := range b.c.Jar.Cookies(u) {
		if c.Name == cookieName {
			return c.Value
		}
	}
	return ""
}

func (r response) has(t *testing.T, what string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(r.body, w) {
			t.Errorf("%s: lacks %q (status %d)\n%s", what, w, r.status, r.body)
		}
	}
}

func (r response) hasNot(t *testing.T, what string, unwanted ...string) {
	t.Helper()
	for _, w := range unwanted {
		if strings.Contains(r.body, w) {
			t.Errorf("%s: has %q (status %d)\n%s", what, w, r.status, r.body)
		}
	}
}

func (r response) want(t *testing.T, what string, status int) {
	t.Helper()
	if r.status != status {
		t.Errorf("%s: status %d, want %d\n%s", what, r.status, status, r.body)
	}
}

// quarantineMessage is a held message to one recipient at example.com.
func quarantineMessage(queueID, sender string, arrival time.Time) quarantine.Message {
	return quarantine.Message{QueueID: queueID, Arrival: arrival, Sender: sender, Recipients: []string{"<script>x</script>@example.com"}}
}
