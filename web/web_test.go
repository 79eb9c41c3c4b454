package web

import (
	"context"
	"errors"
	"fmt"
	"html"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mxguard/mxguard/logstore"
	"github.com/mxguard/mxguard/logstore/explain"
	"github.com/mxguard/mxguard/policy"
	"github.com/mxguard/mxguard/quarantine"
)

func TestLoginLogout(t *testing.T) {
	f := newFixture(t)
	b := f.browser()

	// Pages need a session.
	r := b.get("/log?to=bob%40example.com")
	r.want(t, "GET /log without a session", http.StatusSeeOther)
	if loc := r.header.Get("Location"); loc != "/login?next="+url.QueryEscape("/log?to=bob%40example.com") {
		t.Errorf("redirect to %q", loc)
	}
	r = b.get("/login")
	r.want(t, "GET /login", http.StatusOK)
	r.has(t, "login page", `<form id="login" method="post" action="/login">`, `name="email"`, `name="password"`, `<button type="submit">`)

	r = b.post("/login", url.Values{"email": {exampleAdmin}, "password": {"wrong password!"}})
	r.want(t, "wrong password", http.StatusUnauthorized)
	r.has(t, "wrong password", "Wrong email or password.")
	r = b.post("/login", url.Values{"email": {"nobody@example.com"}, "password": {password}})
	r.want(t, "unknown user", http.StatusUnauthorized)
	r.has(t, "unknown user", "Wrong email or password.") // the same words: no account probing

	r = b.post("/login", url.Values{"email": {"Admin@Example.COM"}, "password": {password}, "next": {"/log?to=bob%40example.com"}})
	r.want(t, "login", http.StatusSeeOther)
	if loc := r.header.Get("Location"); loc != "/log?to=bob%40example.com" {
		t.Errorf("after login, to %q", loc)
	}
	c := r.header.Get("Set-Cookie")
	for _, w := range []string{cookieName + "=", "HttpOnly", "SameSite=Strict", "Path=/"} {
		if !strings.Contains(c, w) {
			t.Errorf("cookie %q lacks %s", c, w)
		}
	}
	if strings.Contains(c, "Secure") {
		t.Errorf("cookie %q is Secure over plain HTTP from an untrusted client", c)
	}
	token := b.cookie()
	if len(token) < 43 {
		t.Errorf("token %q: want 32 random bytes", token)
	}
	// Stored hashed: the token itself is nowhere in the database.
	var n int
	f.acc.db.QueryRow(`SELECT count(*) FROM sessions WHERE token_hash = ?`, token).Scan(&n)
	if n != 0 {
		t.Error("the session token is stored as is")
	}
	f.acc.db.QueryRow(`SELECT count(*) FROM sessions WHERE token_hash = ?`, hashToken(token)).Scan(&n)
	if n != 1 {
		t.Error("no session row under the token's hash")
	}

	r = b.get("/")
	r.want(t, "dashboard", http.StatusOK)
	r.has(t, "dashboard", `<form id="logout" method="post" action="/logout">`, exampleAdmin)
	// Logged in, the login page sends on.
	b.get("/login").want(t, "GET /login with a session", http.StatusSeeOther)

	// Logout ends the session on the server: the old cookie opens nothing.
	r = b.post("/logout", url.Values{"csrf": {b.csrf()}})
	r.want(t, "logout", http.StatusSeeOther)
	if r.header.Get("Location") != "/login" {
		t.Errorf("after logout, to %q", r.header.Get("Location"))
	}
	f.acc.db.QueryRow(`SELECT count(*) FROM sessions WHERE token_hash = ?`, hashToken(token)).Scan(&n)
	if n != 0 {
		t.Error("the session survived logout")
	}
	replay := f.browser()
	u, _ := url.Parse(f.ts.URL)
	replay.c.Jar.SetCookies(u, []*http.Cookie{{Name: cookieName, Value: token}})
	replay.get("/").want(t, "the old cookie after logout", http.StatusSeeOther)

	// Both logins and both failures are recorded.
	evs, err := f.acc.FailedLogins(t.Context(), "", time.Time{}, 10)
	if err != nil || len(evs) != 2 || evs[0].Email != "nobody@example.com" || evs[0].Detail != "no such user" ||
		evs[1].Email != exampleAdmin || evs[1].Detail != "wrong password" || evs[1].Organization != "example" || evs[1].Client != "127.0.0.1" {
		t.Errorf("failed logins: %+v, %v", evs, err)
	}
	f.acc.db.QueryRow(`SELECT count(*) FROM logins WHERE ok = 1 AND email = ?`, exampleAdmin).Scan(&n)
	if n != 1 {
		t.Errorf("%d successful logins recorded, want 1", n)
	}
}

func TestSafeNext(t *testing.T) {
	for next, want := range map[string]string{
		"": "/", "/log?to=x": "/log?to=x", "/log/4": "/log/4", "//evil.example/": "/", "https://evil.example/": "/",
		"/\\evil.example": "/", "javascript:alert(1)": "/", "log": "/", "/login": "/", "/login?next=/": "/", "/x\r\nSet-Cookie: a": "/",
	} {
		if got := safeNext(next); got != want {
			t.Errorf("safeNext(%q) = %q, want %q", next, got, want)
		}
	}
}

func TestSecurityHeaders(t *testing.T) {
	f := newFixture(t)
	b := f.browser()
	anon := f.browser()
	b.login(globalAdmin)
	check := func(what string, r response) {
		t.Helper()
		for k, want := range map[string]string{
			"Content-Security-Policy": contentSecurityPolicy,
			"X-Frame-Options":         "DENY",
			"X-Content-Type-Options":  "nosniff",
			"Referrer-Policy":         "same-origin",
		} {
			if got := r.header.Get(k); got != want {
				t.Errorf("%s: %s = %q, want %q", what, k, got, want)
			}
		}
		if strings.Contains(r.body, "<script") || strings.Contains(r.body, " style=") || strings.Contains(r.body, "javascript:") {
			t.Errorf("%s: inline script or style\n%s", what, r.body)
		}
	}
	for _, p := range []string{"/", "/log", "/log/1", "/quarantine", "/quarantine/C648F988526/release", "/nonexistent", "/static/style.css"} {
		check("GET "+p, b.get(p))
	}
	check("login page", anon.get("/login"))
	check("redirect", anon.get("/"))
	check("failed login", anon.post("/login", url.Values{"email": {"a@b.c"}, "password": {"x"}}))
	check("cross-origin refusal", b.post("/logout", url.Values{}, "Sec-Fetch-Site", "cross-site"))
	if csp := contentSecurityPolicy; !strings.Contains(csp, "default-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") ||
		!strings.Contains(csp, "script-src 'none'") {
		t.Errorf("CSP %q", csp)
	}
	r := b.get("/static/style.css")
	if r.status != 200 || !strings.HasPrefix(r.header.Get("Content-Type"), "text/css") || !strings.Contains(r.body, ".a-reject") {
		t.Errorf("style.css: %d %s", r.status, r.header.Get("Content-Type"))
	}
}

func TestCSRF(t *testing.T) {
	f := newFixture(t)
	b := f.browser().login(exampleAdmin)
	token := b.csrf()
	alive := func(what string) {
		t.Helper()
		if r := b.get("/"); r.status != http.StatusOK {
			t.Errorf("%s: the session ended (%d)", what, r.status)
		}
	}

	// A cross-origin form post is refused before it reaches the handler,
	// by Sec-Fetch-Site (browsers since 2023) or by Origin (older ones).
	for _, hdr := range [][]string{
		{"Sec-Fetch-Site", "cross-site"},
		{"Sec-Fetch-Site", "same-site"},
		{"Origin", "http://evil.example"},
	} {
		what := fmt.Sprintf("POST with %s: %s", hdr[0], hdr[1])
		b.post("/logout", url.Values{"csrf": {token}}, hdr...).want(t, what+" /logout", http.StatusForbidden)
		alive(what)
		b.post("/quarantine/C648F988526/release", url.Values{"csrf": {token}}, hdr...).want(t, what+" release", http.StatusForbidden)
		f.browser().post("/login", url.Values{"email": {exampleAdmin}, "password": {password}}, hdr...).want(t, what+" login", http.StatusForbidden)
	}
	// Without the session's token, or with a forged one.
	for _, form := range []url.Values{{}, {"csrf": {""}}, {"csrf": {"forged" + token[6:]}}, {"csrf": {token + "x"}}} {
		b.post("/logout", form).want(t, fmt.Sprintf("logout with %v", form), http.StatusForbidden)
		alive("logout without the token")
		b.post("/quarantine/C648F988526/release", form).want(t, "release without the token", http.StatusForbidden)
	}
	// Another session's token is no good either.
	other := f.browser().login(exampleAdmin)
	b.post("/quarantine/C648F988526/release", url.Values{"csrf": {other.csrf()}}).want(t, "release with another session's token", http.StatusForbidden)
	if rel, del := f.queue.done(); len(rel)+len(del) > 0 {
		t.Fatalf("refused requests acted: released %v, deleted %v", rel, del)
	}
	// Same origin, with the token: works.
	b.post("/quarantine/C648F988526/release", url.Values{"csrf": {token}}, "Sec-Fetch-Site", "same-origin", "Origin", f.ts.URL).
		want(t, "same-origin release", http.StatusSeeOther)
	// Safe methods change nothing: GET on an action path is the confirmation page.
	if rel, _ := f.queue.done(); len(rel) != 1 {
		t.Errorf("released %v", rel)
	}
	b.get("/logout").want(t, "GET /logout", http.StatusMethodNotAllowed)
}

func TestSessionExpiry(t *testing.T) {
	f := newFixture(t, func(c *policy.WebConfig) {
		c.SessionIdle = policy.Duration{Duration: 30 * time.Minute}
		c.SessionMax = policy.Duration{Duration: 2 * time.Hour}
	})

	// Idle: unused for session_idle, it ends, and its row is deleted.
	b := f.browser().login(exampleAdmin)
	token := b.cookie()
	f.clock.Advance(29 * time.Minute)
	b.get("/").want(t, "after 29 idle minutes", http.StatusOK)
	f.clock.Advance(29 * time.Minute)
	b.get("/log").want(t, "29 minutes after the last use", http.StatusOK)
	f.clock.Advance(30 * time.Minute)
	r := b.get("/log")
	r.want(t, "after 30 idle minutes", http.StatusSeeOther)
	if !strings.HasPrefix(r.header.Get("Location"), "/login") {
		t.Errorf("expired session sent to %q", r.header.Get("Location"))
	}
	if !strings.Contains(r.header.Get("Set-Cookie"), "Max-Age=0") {
		t.Errorf("expired session's cookie not cleared: %q", r.header.Get("Set-Cookie"))
	}
	var n int
	f.acc.db.QueryRow(`SELECT count(*) FROM sessions WHERE token_hash = ?`, hashToken(token)).Scan(&n)
	if n != 0 {
		t.Error("the idle session's row is still there")
	}
	b.post("/logout", url.Values{}).want(t, "POST with an idle session", http.StatusSeeOther)

	// Absolute: however busy, it ends session_max after login.
	b = f.browser().login(exampleAdmin)
	for i := range 5 {
		f.clock.Advance(20 * time.Minute)
		b.get("/").want(t, fmt.Sprintf("in use after %d minutes", 20*(i+1)), http.StatusOK)
	}
	f.clock.Advance(19*time.Minute + 59*time.Second)
	b.get("/").want(t, "just before session_max", http.StatusOK)
	f.clock.Advance(time.Second)
	b.get("/").want(t, "at session_max", http.StatusSeeOther)

	// A new password ends the user's sessions; so does deleting the user.
	b = f.browser().login(exampleAdmin)
	if err := f.acc.SetPassword(t.Context(), exampleAdmin, "another long password"); err != nil {
		t.Fatal(err)
	}
	b.get("/").want(t, "after a password change", http.StatusSeeOther)
	v := f.browser().login(exampleView)
	if err := f.acc.DeleteUser(t.Context(), exampleView); err != nil {
		t.Fatal(err)
	}
	v.get("/").want(t, "after the user was deleted", http.StatusSeeOther)

	// Expired sessions are pruned.
	f.browser().login(acmeAdmin)
	f.clock.Advance(3 * time.Hour)
	if err := f.acc.prune(t.Context(), f.clock.Now(), 30*time.Minute, 2*time.Hour, keepLogins); err != nil {
		t.Fatal(err)
	}
	f.acc.db.QueryRow(`SELECT count(*) FROM sessions`).Scan(&n)
	if n != 0 {
		t.Errorf("%d expired sessions left after prune", n)
	}
}

func TestLoginThrottle(t *testing.T) {
	f := newFixture(t, func(c *policy.WebConfig) {
		c.LoginAttempts = 3
		c.LoginLockout = policy.Duration{Duration: 15 * time.Minute}
		c.TrustedProxies = []policy.Network{{Prefix: netip.MustParsePrefix("127.0.0.0/8")}}
	})
	// Behind the trusted proxy on loopback, each browser is a client of
	// its own, by X-Forwarded-For.
	from := func(ip string) *browser {
		b := f.browser()
		b.hdr.Set("X-Forwarded-For", ip)
		return b
	}
	wrong := url.Values{"email": {exampleAdmin}, "password": {"not the password"}}
	right := url.Values{"email": {exampleAdmin}, "password": {password}}

	// Per account: three failures, from three clients, lock the account.
	for i, ip := range []string{"192.0.2.1", "192.0.2.2", "192.0.2.3"} {
		from(ip).post("/login", wrong).want(t, fmt.Sprintf("failure %d", i+1), http.StatusUnauthorized)
		f.clock.Advance(time.Minute)
	}
	r := from("192.0.2.4").post("/login", right)
	r.want(t, "the right password on a locked account", http.StatusTooManyRequests)
	r.has(t, "locked", "Too many failed logins")
	f.browser().post("/login", url.Values{"email": {acmeAdmin}, "password": {password}}).want(t, "another account", http.StatusSeeOther)
	// The lockout ends login_lockout after the failures.
	f.clock.Advance(12*time.Minute + time.Second)
	r = from("192.0.2.4").post("/login", right)
	r.want(t, "after the lockout", http.StatusSeeOther)
	// A success starts the account's count afresh.
	for range 2 {
		f.clock.Advance(time.Second)
		from("192.0.2.5").post("/login", wrong).want(t, "failure after a success", http.StatusUnauthorized)
	}
	f.clock.Advance(time.Second)
	from("192.0.2.6").post("/login", right).want(t, "two failures after a success", http.StatusSeeOther)
	f.clock.Advance(time.Second)
	for range 2 {
		from("192.0.2.7").post("/login", wrong).want(t, "failures after the next success", http.StatusUnauthorized)
	}
	from("192.0.2.8").post("/login", right).want(t, "two failures after the next success", http.StatusSeeOther)
	f.clock.Advance(time.Second)
	from("192.0.2.8").post("/login", wrong)
	from("192.0.2.8").post("/login", wrong)
	from("192.0.2.8").post("/login", wrong)
	from("192.0.2.9").post("/login", right).want(t, "three failures after a success", http.StatusTooManyRequests)
	f.clock.Advance(16 * time.Minute)

	// Per client: three failures on three accounts lock the client out,
	// also for an account it knows the password of; other clients are
	// not affected.
	for _, email := range []string{"a@example.com", "b@example.com", "c@example.com"} {
		from("198.51.100.9").post("/login", url.Values{"email": {email}, "password": {"guess guess"}}).want(t, "client failure", http.StatusUnauthorized)
	}
	from("198.51.100.9").post("/login", url.Values{"email": {acmeAdmin}, "password": {password}}).want(t, "locked client", http.StatusTooManyRequests)
	from("198.51.100.10").post("/login", url.Values{"email": {acmeAdmin}, "password": {password}}).want(t, "another client", http.StatusSeeOther)
	// IPv6 clients count by /64.
	for i := range 3 {
		from(fmt.Sprintf("2001:db8:1:2::%x", i+1)).post("/login", url.Values{"email": {fmt.Sprintf("v6-%d@example.com", i)}, "password": {"guess guess"}})
	}
	from("2001:db8:1:2:ffff::1").post("/login", url.Values{"email": {acmeAdmin}, "password": {password}}).want(t, "same /64", http.StatusTooManyRequests)
	from("2001:db8:1:3::1").post("/login", url.Values{"email": {acmeAdmin}, "password": {password}}).want(t, "another /64", http.StatusSeeOther)

	// The dashboard shows admins the failures: an organisation's admin
	// those of its own accounts, a global admin every one; viewers none.
	r = f.browser().login(exampleAdmin).get("/")
	r.has(t, "example admin's dashboard", `id="failed-logins"`, "wrong password (now locked out)", "192.0.2.3")
	r.hasNot(t, "example admin's dashboard", "a@example.com", "198.51.100.9")
	r = f.browser().login(globalAdmin).get("/")
	r.has(t, "global admin's dashboard", "a@example.com", "198.51.100.9", "no such user (now locked out)", "2001:db8:1:2::3")
	r = f.browser().login(exampleView).get("/")
	r.hasNot(t, "viewer's dashboard", `id="failed-logins"`)
}

func TestLoginThrottleUntrustedProxy(t *testing.T) {
	f := newFixture(t) // no trusted proxies
	for i := range 3 {
		b := f.browser()
		b.hdr.Set("X-Forwarded-For", fmt.Sprintf("192.0.2.%d", i+1))
		b.post("/login", url.Values{"email": {fmt.Sprintf("x%d@example.com", i)}, "password": {"guess guess"}})
	}
	b := f.browser()
	b.hdr.Set("X-Forwarded-For", "192.0.2.99")
	b.post("/login", url.Values{"email": {acmeAdmin}, "password": {password}}).want(t, "forged X-Forwarded-For", http.StatusTooManyRequests)
}

func TestClientAddress(t *testing.T) {
	f := newFixture(t, func(c *policy.WebConfig) {
		c.TrustedProxies = []policy.Network{{Prefix: netip.MustParsePrefix("10.0.0.0/8")}, {Prefix: netip.MustParsePrefix("::1/128")}}
	})
	tests := []struct {
		remote, xff, proto string
		client             string
		https              bool
	}{
		{"192.0.2.7:5555", "", "", "192.0.2.7", false},
		{"192.0.2.7:5555", "203.0.113.1", "https", "192.0.2.7", false},          // not a proxy: ignored
		{"10.1.2.3:5555", "203.0.113.1", "https", "203.0.113.1", true},          // the proxy says
		{"10.1.2.3:5555", "1.2.3.4, 203.0.113.1", "http", "203.0.113.1", false}, // the client's own claim is left of it
		{"10.1.2.3:5555", "203.0.113.1, 10.9.9.9", "", "203.0.113.1", false},    // two proxies
		{"10.1.2.3:5555", "", "", "10.1.2.3", false},
		{"10.1.2.3:5555", "garbage", "", "10.1.2.3", false},
		{"[::1]:5555", "2001:db8::1", "https", "2001:db8::1", true},
		{"[::ffff:192.0.2.7]:5555", "", "", "192.0.2.7", false},
	}
	for _, tt := range tests {
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = tt.remote
		if tt.xff != "" {
			r.Header.Set("X-Forwarded-For", tt.xff)
		}
		if tt.proto != "" {
			r.Header.Set("X-Forwarded-Proto", tt.proto)
		}
		if got := f.srv.clientAddr(r).String(); got != tt.client {
			t.Errorf("%s, XFF %q: client %s, want %s", tt.remote, tt.xff, got, tt.client)
		}
		if got := f.srv.https(r); got != tt.https {
			t.Errorf("%s, proto %q: https %v, want %v", tt.remote, tt.proto, got, tt.https)
		}
	}
}

func TestSecureCookie(t *testing.T) {
	login := func(f *fixture, remote, proto string) *http.Cookie {
		t.Helper()
		r := httptest.NewRequest("POST", "/login", strings.NewReader(url.Values{"email": {exampleAdmin}, "password": {password}}.Encode()))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		r.RemoteAddr = remote
		if proto != "" {
			r.Header.Set("X-Forwarded-Proto", proto)
		}
		w := httptest.NewRecorder()
		f.srv.Handler().ServeHTTP(w, r)
		cs := w.Result().Cookies()
		if w.Code != http.StatusSeeOther || len(cs) != 1 {
			t.Fatalf("login: %d, cookies %v", w.Code, cs)
		}
		if hsts := w.Header().Get("Strict-Transport-Security"); (hsts != "") != cs[0].Secure {
			t.Errorf("HSTS %q with a Secure=%v cookie", hsts, cs[0].Secure)
		}
		return cs[0]
	}
	f := newFixture(t, func(c *policy.WebConfig) {
		c.TrustedProxies = []policy.Network{{Prefix: netip.MustParsePrefix("127.0.0.1/32")}}
	})
	if c := login(f, "127.0.0.1:4000", "https"); !c.Secure || !c.HttpOnly || c.SameSite != http.SameSiteStrictMode {
		t.Errorf("behind a trusted HTTPS proxy: %+v", c)
	}
	if c := login(f, "127.0.0.1:4000", ""); c.Secure {
		t.Errorf("plain HTTP: %+v", c)
	}
	if c := login(f, "192.0.2.9:4000", "https"); c.Secure {
		t.Errorf("an untrusted client's X-Forwarded-Proto was believed: %+v", c)
	}

	// Served over TLS itself.
	ts := httptest.NewTLSServer(f.srv.Handler())
	defer ts.Close()
	form := url.Values{"email": {exampleAdmin}, "password": {password}}
	c := ts.Client()
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := c.PostForm(ts.URL+"/login", form)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if cs := resp.Cookies(); len(cs) != 1 || !cs[0].Secure || resp.Header.Get("Strict-Transport-Security") == "" {
		t.Errorf("over TLS: cookies %v, HSTS %q", cs, resp.Header.Get("Strict-Transport-Security"))
	}
}

var txnRE = regexp.MustCompile(`<tr class="txn" data-id="(\d+)">`)

// ids returns the transaction ids of a results page, in order.
func ids(body string) []int64 {
	var out []int64
	for _, m := range txnRE.FindAllStringSubmatch(body, -1) {
		id, _ := strconv.ParseInt(m[1], 10, 64)
		out = append(out, id)
	}
	return out
}

func TestCrossOrganization(t *testing.T) {
	f := newFixture(t)
	ex := f.browser().login(exampleAdmin)
	global := f.browser().login(globalAdmin)
	acmeID := strconv.FormatInt(f.recs["acmeReject"].ID, 10)

	// By id: another organisation's transaction is as absent as a missing one.
	missing := ex.get("/log/999999")
	missing.want(t, "missing id", http.StatusNotFound)
	r := ex.get("/log/" + acmeID)
	r.want(t, "acme's transaction for example's admin", http.StatusNotFound)
	if r.body != missing.body {
		t.Errorf("another organisation's transaction differs from a missing one:\n%s\n---\n%s", r.body, missing.body)
	}
	ex.get("/log/"+strconv.FormatInt(f.recs["relay"].ID, 10)).want(t, "a transaction of no organisation", http.StatusNotFound)
	for _, p := range []string{"/log/abc", "/log/-1", "/log/0", "/log/1.5"} {
		ex.get(p).want(t, p, http.StatusNotFound)
	}
	global.get("/log/"+acmeID).want(t, "acme's transaction for the global admin", http.StatusOK)
	f.browser().login(acmeAdmin).get("/log/"+acmeID).want(t, "acme's transaction for acme's admin", http.StatusOK)

	// Searches: only example's rows, whatever is asked.
	// (Not the text searched for, which fills the form again.)
	secrets := []string{"merger secret", "held secret", "secret-partner", "spam@acme-vendor", "relay.test", "erin@acme.test"}
	for _, q := range []string{"", "?org=acme", "?queue_id=ACME5ECRE7", "?subject=ACME", "?from=%40acme-vendor.test", "?to=dave%40acme.test",
		"?queue_id=D00DFEED42", "?org=", "?action=reject", "?client=203.0.113.9"} {
		r := ex.get("/log" + q)
		r.want(t, "search "+q, http.StatusOK)
		r.hasNot(t, "example's search "+q, secrets...)
		for _, id := range ids(r.body) {
			if rec, _ := f.store.Get(t.Context(), id); rec.Organization != "example" {
				t.Errorf("search %s: example's admin sees transaction %d of %q", q, id, rec.Organization)
			}
		}
	}
	if got := ids(ex.get("/log?org=acme").body); len(got) != 0 {
		t.Errorf("org=acme for example's admin: %v", got)
	}
	ex.get("/log").hasNot(t, "the search form of an organisation's user", `name="org"`)
	r = global.get("/log?org=acme")
	r.has(t, "global search org=acme", "ACME merger secret", `name="org"`)
	if got := ids(r.body); len(got) != 2 {
		t.Errorf("global org=acme: %v", got)
	}
	global.get("/log?queue_id=ACME5ECRE7").has(t, "global queue id search", "ACME merger secret")
	if got := ids(global.get("/log").body); len(got) != len(f.recs) {
		t.Errorf("global admin sees %d transactions, want %d", len(got), len(f.recs))
	}

	// Quarantine: example's held mail only.
	r = ex.get("/quarantine")
	r.want(t, "quarantine", http.StatusOK)
	r.has(t, "example's quarantine", `<tr class="held" data-queue-id="C648F988526">`, `href="/quarantine/C648F988526/release"`)
	r.hasNot(t, "example's quarantine", "D00DFEED42", "1E9C4988022", "acme-vendor", "erin@acme.test")
	r = global.get("/quarantine")
	r.has(t, "global quarantine", "C648F988526", "D00DFEED42", "1E9C4988022", "(not in mxguard&#39;s log)")

	// Acting on another organisation's message: not found, nothing done.
	token := ex.csrf()
	for _, op := range []string{"release", "delete"} {
		for _, id := range []string{"D00DFEED42", "1E9C4988022", "NOTHELD123", "ALL", "-"} {
			ex.get("/quarantine/"+id+"/"+op).want(t, "GET "+op+" "+id, http.StatusNotFound)
			ex.post("/quarantine/"+id+"/"+op, url.Values{"csrf": {token}}).want(t, "POST "+op+" "+id, http.StatusNotFound)
		}
	}
	if rel, del := f.queue.done(); len(rel)+len(del) > 0 {
		t.Fatalf("example's admin acted on others' mail: released %v, deleted %v", rel, del)
	}
	gt := global.csrf()
	global.post("/quarantine/D00DFEED42/delete", url.Values{"csrf": {gt}}).want(t, "global delete", http.StatusSeeOther)
	if _, del := f.queue.done(); len(del) != 1 || del[0] != "D00DFEED42" {
		t.Errorf("deleted %v", del)
	}
}

func TestQuarantineRelease(t *testing.T) {
	f := newFixture(t)
	b := f.browser().login(exampleAdmin)

	r := b.get("/quarantine")
	r.has(t, "list", `<tr class="held" data-queue-id="C648F988526">`, "SPFFail", "Invoice 2291 overdue", "2h",
		`href="/log/`+strconv.FormatInt(f.recs["exampleHeld"].ID, 10)+`"`, `href="/quarantine/C648F988526/delete"`)
	r = b.get("/quarantine/C648F988526/release")
	r.want(t, "confirm release", http.StatusOK)
	r.has(t, "confirm release", `<form id="confirm" method="post" action="/quarantine/C648F988526/release">`, `<button type="submit" class="release">Release</button>`,
		"billing@sender.test", "carol@example.com")
	b.get("/quarantine/C648F988526/destroy").want(t, "unknown operation", http.StatusNotFound)
	if rel, _ := f.queue.done(); len(rel) != 0 {
		t.Fatal("GET released")
	}
	token := csrfRE.FindStringSubmatch(r.body)[1]
	r = b.post("/quarantine/C648F988526/release", url.Values{"csrf": {token}})
	r.want(t, "release", http.StatusSeeOther)
	if r.header.Get("Location") != "/quarantine" {
		t.Errorf("after release, to %q", r.header.Get("Location"))
	}
	r = b.get("/quarantine")
	r.has(t, "after release", `id="flash"`, "C648F988526: released from the hold queue and queued for delivery", "Recorded on transaction")
	r.hasNot(t, "after release", `data-queue-id="C648F988526"`)
	b.get("/quarantine").hasNot(t, "the flash, shown once", `id="flash"`)

	rel, _ := f.queue.done()
	if len(rel) != 1 || rel[0] != "C648F988526" {
		t.Errorf("released %v", rel)
	}
	rec, err := f.store.Get(t.Context(), f.recs["exampleHeld"].ID)
	if err != nil {
		t.Fatal(err)
	}
	last := rec.Evidence[len(rec.Evidence)-1]
	if last.Check != "quarantine" || last.Result != "released" || last.Detail != "by web:admin@example.com at 2026-11-23T12:30:00Z" {
		t.Errorf("logged %+v", last)
	}
	// The detail page tells it, as mxguard log show does.
	b.get("/log/"+strconv.FormatInt(rec.ID, 10)).has(t, "detail after release",
		"It was then released from the hold queue by web:admin@example.com at 2026-11-23T12:30:00Z.")

	// Releasing again: gone.
	b.post("/quarantine/C648F988526/release", url.Values{"csrf": {token}}).want(t, "second release", http.StatusNotFound)

	// Delete, by the global admin, of a message the log does not know.
	g := f.browser().login(globalAdmin)
	g.post("/quarantine/1E9C4988022/delete", url.Values{"csrf": {g.csrf()}}).want(t, "delete", http.StatusSeeOther)
	g.get("/quarantine").has(t, "after delete", "1E9C4988022: deleted from the hold queue", "not in mxguard&#39;s log")
}

func TestQuarantineRecordLog(t *testing.T) {
	// mxguard web opens the log for writing per action; when it cannot,
	// nothing is released.
	f := newFixture(t)
	f.srv.opts.RecordLog = func() (quarantine.Log, func(), error) {
		return nil, nil, fmt.Errorf("cannot write /var/lib/mxguard/mxguard.db")
	}
	b := f.browser().login(exampleAdmin)
	b.post("/quarantine/C648F988526/release", url.Values{"csrf": {b.csrf()}}).want(t, "release", http.StatusSeeOther)
	b.get("/quarantine").has(t, "flash", "C648F988526 was not released: the transaction log, where that is recorded, cannot be written")
	if rel, _ := f.queue.done(); len(rel) != 0 {
		t.Errorf("released %v without a log to record it in", rel)
	}
}

func TestViewer(t *testing.T) {
	f := newFixture(t)
	v := f.browser().login(exampleView)
	r := v.get("/quarantine")
	r.want(t, "viewer's quarantine", http.StatusOK)
	r.has(t, "viewer's quarantine", `data-queue-id="C648F988526"`)
	r.hasNot(t, "viewer's quarantine", "/release", "/delete")
	token := v.csrf()
	for _, op := range []string{"release", "delete"} {
		v.get("/quarantine/C648F988526/"+op).want(t, "viewer GET "+op, http.StatusForbidden)
		v.post("/quarantine/C648F988526/"+op, url.Values{"csrf": {token}}).want(t, "viewer POST "+op, http.StatusForbidden)
	}
	if rel, del := f.queue.done(); len(rel)+len(del) > 0 {
		t.Errorf("a viewer acted: released %v, deleted %v", rel, del)
	}
	r = v.get("/log/" + strconv.FormatInt(f.recs["exampleHeld"].ID, 10))
	r.want(t, "viewer's detail", http.StatusOK)
	r.hasNot(t, "viewer's detail", "/release")
	v.get("/log").want(t, "viewer's log", http.StatusOK)
}

func TestHostileText(t *testing.T) {
	f := newFixture(t)
	// A failed login with a hostile email, for the dashboard.
	f.browser().post("/login", url.Values{"email": {"<script>alert('login')</script>@x"}, "password": {"whatever"}})
	f.queue.msgs = append(f.queue.msgs, quarantineMessage("BADBAD1234", hostileSender, f.clock.Now()))
	b := f.browser().login(globalAdmin)
	id := strconv.FormatInt(f.recs["hostile"].ID, 10)
	pages := map[string]response{
		"search":     b.get("/log"),
		"subject":    b.get("/log?subject=" + url.QueryEscape("<script>")),
		"detail":     b.get("/log/" + id),
		"quarantine": b.get("/quarantine"),
		"confirm":    b.get("/quarantine/BADBAD1234/release"),
		"dashboard":  b.get("/"),
		"bad search": b.get("/log?from=" + url.QueryEscape("<script>alert(1)</script>")),
	}
	for name, r := range pages {
		if r.status != http.StatusOK && name != "bad search" {
			t.Errorf("%s: status %d", name, r.status)
		}
		for _, bad := range []string{"<script", "<img", "<b>", "\x1b", "\x00", "\u202e", "onerror=alert(1)>"} {
			if strings.Contains(r.body, bad) {
				t.Errorf("%s: the page carries %q:\n%s", name, bad, r.body)
			}
		}
	}
	pages["search"].has(t, "search", "&lt;script&gt;alert(&#39;subject&#39;)&lt;/script&gt;?[31mred??evil", "&lt;img src=x onerror=alert(1)&gt;@evil.test")
	if got := ids(pages["subject"].body); len(got) != 1 || strconv.FormatInt(got[0], 10) != id {
		t.Errorf("subject search for <script>: %v", got)
	}
	pages["detail"].has(t, "detail", "&lt;b&gt;helo&lt;/b&gt;", "&lt;script&gt;detail&lt;/script&gt;", "X-Evil: &lt;script&gt;header&lt;/script&gt;",
		"&lt;script&gt;rcpt&lt;/script&gt;@example.com", "550 5.7.23 &lt;script&gt;reply&lt;/script&gt;")
	pages["quarantine"].has(t, "quarantine", "&lt;img src=x onerror=alert(1)&gt;@evil.test")
	pages["dashboard"].has(t, "dashboard", "&lt;script&gt;alert(&#39;login&#39;)&lt;/script&gt;@x", "&lt;img src=x onerror=alert(1)&gt;@evil.test")
	pages["bad search"].want(t, "bad search", http.StatusBadRequest)
	pages["bad search"].has(t, "bad search", `value="&lt;script&gt;alert(1)&lt;/script&gt;"`)
}

func TestLogSearch(t *testing.T) {
	f := newFixture(t)
	b := f.browser().login(exampleAdmin)
	r := b.get("/log")
	r.has(t, "log page", `<form id="search" method="get" action="/log"`, `name="since"`, `name="until"`, `name="from"`, `name="to"`,
		`name="client"`, `name="action"`, `name="queue_id"`, `name="subject"`, `<a href="/log/`+strconv.FormatInt(f.recs["exampleAccept"].ID, 10)+`">`)
	tests := []struct {
		q    string
		want []string // fixture names, newest first
	}{
		{"", []string{"hostile", "exampleHeld", "exampleAccept"}},
		{"?action=quarantine", []string{"exampleHeld"}},
		{"?from=news%40SENDER.test", []string{"exampleAccept"}},
		{"?from=%40sender.test", []string{"exampleHeld", "exampleAccept"}},
		{"?to=bob%40example.com", []string{"exampleAccept"}},
		{"?to=%40example.com", []string{"hostile", "exampleHeld", "exampleAccept"}},
		{"?client=203.0.113.0%2F24", []string{"hostile", "exampleHeld"}},
		{"?client=192.0.2.25", []string{"exampleAccept"}},
		{"?queue_id=4A1B2C3D4E", []string{"exampleAccept"}},
		{"?subject=invoice", []string{"exampleHeld"}},
		{"?since=150m", []string{"hostile", "exampleHeld"}},
		{"?since=2026-11-23T09:00&until=2026-11-23T10%3A00", []string{"exampleAccept"}},
		{"?until=2h30m", []string{"exampleAccept"}},
		{"?org=example", []string{"hostile", "exampleHeld", "exampleAccept"}},
	}
	for _, tt := range tests {
		r := b.get("/log" + tt.q)
		r.want(t, tt.q, http.StatusOK)
		var want []int64
		for _, n := range tt.want {
			want = append(want, f.recs[n].ID)
		}
		if got := ids(r.body); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("search %q: %v, want %v (%v)", tt.q, got, want, tt.want)
		}
	}
	b.get("/log?action=reject&from=news%40sender.test").has(t, "no match", `id="none"`, "No transaction matches.")
	// The form is filled with the search.
	b.get("/log?action=quarantine&subject=inv").has(t, "filled form", `<option value="quarantine" selected>`, `name="subject" value="inv"`)

	for _, q := range []string{"since=yesterday", "until=-5m", "from=nobody", "to=%3C%3E", "client=300.1.1.1", "action=bounce",
		"since=1h&until=2h", "page=xyz"} {
		r := b.get("/log?" + q)
		r.want(t, q, http.StatusBadRequest)
		r.has(t, q, `id="problems"`)
	}
}

func TestLogPaging(t *testing.T) {
	f := newFixture(t)
	// 130 more of example's transactions, many sharing a millisecond.
	base := f.clock.Now().Add(-30 * time.Minute)
	bulk := make([]int64, 130)
	for i := range bulk {
		r := &logstore.Record{StartedAt: base.Add(time.Duration(i/20) * time.Second), MailFrom: fmt.Sprintf("bulk%d@sender.test", i),
			Organization: "example", Action: "accept", Evidence: []logstore.Evidence{{Check: "client"}}}
		if err := f.store.Save(t.Context(), r); err != nil {
			t.Fatal(err)
		}
		bulk[i] = r.ID
	}
	b := f.browser().login(exampleAdmin)
	seen := map[int64]bool{}
	var order []int64
	next := "/log?from=%40sender.test"
	pages := 0
	nextRE := regexp.MustCompile(`<a id="next" rel="next" href="([^"]+)">`)
	for next != "" {
		r := b.get(next)
		r.want(t, next, http.StatusOK)
		pages++
		got := ids(r.body)
		if len(got) > pageSize {
			t.Fatalf("page %d has %d rows", pages, len(got))
		}
		for _, id := range got {
			if seen[id] {
				t.Errorf("page %d repeats %d", pages, id)
			}
			seen[id] = true
		}
		order = append(order, got...)
		next = ""
		if m := nextRE.FindStringSubmatch(r.body); m != nil {
			next = html.UnescapeString(m[1])
			if !strings.Contains(next, "from=%40sender.test") {
				t.Errorf("the next page lost the filter: %s", next)
			}
		}
		if pages > 1 {
			r.has(t, "page 2+", `<a id="first" href="/log?from=%40sender.test">Newest</a>`)
		}
	}
	if pages != 3 || len(order) != 132 {
		t.Errorf("%d pages, %d rows; want 3 pages, 132 rows", pages, len(order))
	}
	// Newest first: by time, then id.
	var prev *logstore.Record
	for _, id := range order {
		r, _ := f.store.Get(t.Context(), id)
		if prev != nil && (r.StartedAt.After(prev.StartedAt) || (r.StartedAt.Equal(prev.StartedAt) && r.ID > prev.ID)) {
			t.Errorf("%d (%s) after %d (%s)", r.ID, r.StartedAt, prev.ID, prev.StartedAt)
		}
		prev = r
	}
	// A cursor after the last of 20 rows of one millisecond: more to skip
	// than the first read covers.
	rows, more, err := f.srv.searchPage(httptest.NewRequest("GET", "/", nil), logstore.Filter{From: "@sender.test", Organization: "example"},
		cursor{base.Add(5 * time.Second), bulk[100]})
	if err != nil || len(rows) != pageSize || !more || rows[0].ID != bulk[99] {
		t.Errorf("cursor at a crowded millisecond: %d rows, more %v, %v", len(rows), more, err)
	}
	rows, more, err = f.srv.searchPage(httptest.NewRequest("GET", "/", nil), logstore.Filter{From: "@sender.test", Organization: "example"},
		cursor{base.Add(5 * time.Second), bulk[110]})
	if err != nil || len(rows) != pageSize || !more || rows[0].ID != bulk[109] {
		t.Errorf("cursor in a crowded millisecond: %d rows, more %v, %v", len(rows), more, err)
	}
}

func TestLogDetail(t *testing.T) {
	f := newFixture(t)
	b := f.browser().login(exampleAdmin)
	for _, name := range []string{"exampleAccept", "exampleHeld", "hostile"} {
		rec, _ := f.store.Get(t.Context(), f.recs[name].ID)
		r := b.get("/log/" + strconv.FormatInt(rec.ID, 10))
		r.want(t, name, http.StatusOK)
		r.has(t, name, `<section id="explanation">`)
		// The very explanation of mxguard log show.
		e := explain.Of(rec)
		for _, p := range e.Paragraphs {
			r.has(t, name, html.EscapeString(clean(p, 0)))
		}
		for _, fl := range e.Fields {
			r.has(t, name, "<th scope=\"row\">"+fl.Name+"</th><td>"+html.EscapeString(clean(fl.Value, 0))+"</td>")
		}
		for _, c := range e.Checks {
			r.has(t, name, "<td>"+html.EscapeString(c.Check)+"</td>")
		}
	}
	r := b.get("/log/" + strconv.FormatInt(f.recs["exampleHeld"].ID, 10))
	r.has(t, "held", "Quarantined at end of message: SPF fail for sender.test", "spf", "420µs", "X-MXGuard-Verdict: quarantine; reasons=SPFFail",
		`href="/quarantine/C648F988526/release"`, `href="/log?queue_id=C648F988526"`)
	r = b.get("/log/" + strconv.FormatInt(f.recs["exampleAccept"].ID, 10))
	r.has(t, "accept", "Accepted at end of message", "bob@example.com", "Authentication-Results: mx.example.com; spf=pass")
	r.hasNot(t, "accept", "/release")
}

func TestDashboard(t *testing.T) {
	f := newFixture(t)
	r := f.browser().login(globalAdmin).get("/")
	r.want(t, "dashboard", http.StatusOK)
	r.has(t, "dashboard", "Dashboard <small>all organisations</small>", `<span class="big">6</span> transactions in the last 24 hours`,
		"Transactions per hour, last 24 hours (UTC)", "Transactions per day, last 30 days (UTC)", `<svg viewBox="0 0 720 200"`,
		`<rect class="a-reject"`, `<rect class="a-quarantine"`, `<rect class="a-accept"`, "2026-11-23 11:00 UTC: quarantine 1, reject 3, total 4", "2026-11-23 10:00 UTC: quarantine 1, total 1",
		`id="top-senders"`, "secret-partner@acme-vendor.test", `id="top-reasons"`, "SPFFail", `id="failed-logins"`)
	// The hourly chart has 24 bars, the daily one 30.
	charts := strings.Split(r.body, "<figure")
	if len(charts) != 3 || strings.Count(charts[1], `<g class="bar">`) != 24 || strings.Count(charts[2], `<g class="bar">`) != 30 {
		t.Errorf("bars: %d charts", len(charts)-1)
	}
	r = f.browser().login(exampleAdmin).get("/")
	r.has(t, "example's dashboard", "Dashboard <small>organisation example</small>", `<span class="big">3</span> transactions`)
	r.hasNot(t, "example's dashboard", "acme-vendor", "relay.test")
	// An empty period.
	f.clock.Advance(365 * 24 * time.Hour)
	r = f.browser().login(exampleView).get("/")
	r.has(t, "empty", "No transactions in this period.", `<span class="big">0</span>`)
}

func TestNotFound(t *testing.T) {
	f := newFixture(t)
	b := f.browser().login(exampleAdmin)
	for _, p := range []string{"/nope", "/log/4/x", "/quarantine/x"} {
		b.get(p).want(t, p, http.StatusNotFound)
	}
	b.post("/log", url.Values{}).want(t, "POST /log", http.StatusMethodNotAllowed)
	b.do("DELETE", "/quarantine/C648F988526/release", nil).want(t, "DELETE", http.StatusMethodNotAllowed)
}

func TestShutdown(t *testing.T) {
	f := newFixture(t)
	if err := f.srv.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	// Serve after Shutdown returns at once.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- f.srv.Serve(ln) }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve after Shutdown: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve after Shutdown did not return")
	}
}

// brokenMTA is a Postfix that cannot be asked.
type brokenMTA struct{ heldQueue }

func (*brokenMTA) Held(context.Context) ([]quarantine.Message, error) {
	return nil, errors.New("postqueue not found (looked in $PATH and /usr/sbin): <Postfix only>")
}

func TestQuarantineMTAError(t *testing.T) {
	f := newFixture(t)
	f.srv.opts.MTA = &brokenMTA{}
	b := f.browser().login(exampleAdmin)
	for _, r := range []response{
		b.get("/quarantine"),
		b.get("/quarantine/C648F988526/release"),
		b.post("/quarantine/C648F988526/delete", url.Values{"csrf": {b.csrf()}}),
	} {
		r.want(t, "hold queue error", http.StatusServiceUnavailable)
		r.has(t, "hold queue error", "The hold queue could not be read: postqueue not found", "&lt;Postfix only&gt;")
	}
}

func TestDashboardCache(t *testing.T) {
	f := newFixture(t)
	b := f.browser().login(exampleAdmin)
	b.get("/").has(t, "first", `<span class="big">3</span> transactions`)
	if err := f.store.Save(t.Context(), &logstore.Record{StartedAt: f.clock.Now().Add(-time.Minute), Organization: "example", Action: "accept"}); err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(30 * time.Second)
	b.get("/").has(t, "within a minute", `<span class="big">3</span> transactions`)
	f.clock.Advance(31 * time.Second)
	b.get("/").has(t, "a minute later", `<span class="big">4</span> transactions`)
}
