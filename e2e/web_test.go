package e2e

// The web console (web/, docs/web.md) in a real browser: headless Chromium
// from Debian's chromium package, driven with chromedp, against a console
// that reads the transaction log of mxguard behind a real Postfix and
// releases mail from that Postfix's hold queue.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/mxguard/mxguard/internal/syncbuf"
)

// outEnv names a directory for what the tests leave to be looked at: the
// browser test's screenshots go into its web/ folder. Unset, they go to
// mxguard-e2e-web-screens in the system's temporary directory. Either way
// the test logs where, and they stay after the test.
const outEnv = "MXGUARD_E2E_OUT"

// The console's administrator, made with mxguard user add.
const (
	webAdmin    = "admin@example.com"
	webPassword = "e2e-console-secret"
)

// browserTimeout bounds the whole browser session, the browser's start
// included; stepTimeout bounds each page. Only a failing test waits them
// out.
const (
	browserTimeout = 2 * time.Minute
	stepTimeout    = 20 * time.Second
)

// heldSubject is the held message's subject: markup and quotes, to see that
// the console shows them as text.
const heldSubject = `e2e web held <b>bold?</b> & "quoted"`

// TestWeb logs in to the console in Chromium, finds a message that went
// through Postfix and mxguard, reads its explanation, releases a
// quarantined message through Postfix's hold queue, sees the release in
// the log, and logs out. It saves a screenshot of every page.
func TestWeb(t *testing.T) {
	requireE2E(t, "swaks", "saslpasswd2", "openssl", "setpriv", "chromium")
	start := time.Now()
	ph := setUp(t, "127.0.0.0/8")
	pf := startPostfix(t, filepath.Join(ph.dir, "postfix"), ph.mx.listen)
	con := startWebConsole(t, ph, pf)
	t.Logf("setup (mxguard, Postfix, console, admin account): %v", time.Since(start).Round(time.Millisecond))

	// Two messages through Postfix and mxguard: one delivered, one held
	// (quarantine.test's organisation quarantines SPF fail).
	start = time.Now()
	clean := sendWebMail(t, pf, swaksRun{client: "192.0.2.31", from: "web-clean@pass.test",
		to: []string{"carol@example.com"}, headers: []string{"Subject: e2e web clean", "X-E2E-ID: web-clean"}})
	cleanRow := ph.mx.waitRow(t, "web-clean@pass.test", "accept")
	waitDelivery(t, pf.mailbox(), "web-clean")
	held := sendWebMail(t, pf, swaksRun{client: "203.0.113.31", from: "web-held@pass.test",
		to: []string{"dave@quarantine.test"}, headers: []string{"Subject: " + heldSubject, "X-E2E-ID: web-held"}})
	heldRow := ph.mx.waitRow(t, "web-held@pass.test", "quarantine")
	if cleanRow.QueueID != clean || heldRow.QueueID != held {
		t.Fatalf("rows' queue ids %q and %q; Postfix said %q and %q", cleanRow.QueueID, heldRow.QueueID, clean, held)
	}
	if _, _, ok := pf.held(t, held); !ok {
		t.Fatalf("%s is not in Postfix's hold queue: %+v", held, pf.queue())
	}
	t.Logf("mail: %v", time.Since(start).Round(time.Millisecond))

	start = time.Now()
	b := newBrowser(t, con.url)
	t.Logf("browser start: %v", time.Since(start).Round(time.Millisecond))
	start = time.Now()

	// Logging in: an unauthenticated visitor is sent to the login page,
	// and back to where they were going once logged in.
	b.navigate("/")
	b.wantPath("/login")
	b.waitVisible("form#login")
	b.screenshot("01-login")
	b.do(chromedp.SendKeys(chromedp.CSS(`#login input[name=email]`), webAdmin),
		chromedp.SendKeys(chromedp.CSS(`#login input[name=password]`), webPassword))
	b.load(chromedp.Submit(chromedp.CSS(`#login input[name=password]`)))
	b.wantPath("/")
	b.waitVisible("form#logout")
	if who := b.text("#user"); who != webAdmin {
		t.Errorf("logged in as %q; want %s", who, webAdmin)
	}
	b.screenshot("02-dashboard")

	// Where is my mail: the search form, by sender.
	b.load(chromedp.Click(chromedp.CSS(`nav a[href="/log"]`)))
	b.wantPath("/log")
	b.do(chromedp.SendKeys(chromedp.CSS(`#search input[name=from]`), "web-clean@pass.test"))
	b.load(chromedp.Submit(chromedp.CSS(`#search input[name=from]`)))
	if q := b.location().Query().Get("from"); q != "web-clean@pass.test" {
		t.Errorf("search URL's from=%q; want the sender", q)
	}
	rows := b.nodes("tr.txn")
	if len(rows) != 1 || rows[0].AttributeValue("data-id") != fmt.Sprint(cleanRow.ID) {
		t.Fatalf("search by sender: %d rows; want exactly the row %d", len(rows), cleanRow.ID)
	}
	if got := b.text("tr.txn"); !strings.Contains(got, clean) || !strings.Contains(got, "accept") {
		t.Errorf("result row %q; want queue id %s and accept", got, clean)
	}
	b.screenshot("03-search")

	// Its explanation.
	b.load(chromedp.Click(chromedp.CSS(`tr.txn a[href="/log/` + fmt.Sprint(cleanRow.ID) + `"]`)))
	b.wantPath(fmt.Sprintf("/log/%d", cleanRow.ID))
	expl := b.text("#explanation")
	for _, re := range []string{`Accepted at end of message`, `SPF\s+pass for pass\.test`, regexp.QuoteMeta(clean)} {
		if !regexp.MustCompile(re).MatchString(expl) {
			t.Errorf("explanation does not match %q:\n%s", re, expl)
		}
	}
	b.screenshot("04-detail")

	// Releasing the held message: the quarantine list, the confirmation,
	// and Postfix's hold queue.
	b.load(chromedp.Click(chromedp.CSS(`nav a[href="/quarantine"]`)))
	b.wantPath("/quarantine")
	heldTR := `tr.held[data-queue-id="` + held + `"]`
	b.waitVisible(heldTR)
	if got := b.text(heldTR + " td.subject"); got != heldSubject {
		t.Errorf("held message's subject shown as %q; want %q", got, heldSubject)
	}
	if got := b.text(heldTR); !strings.Contains(got, "SPFFail") {
		t.Errorf("held row %q; want the reason SPFFail", got)
	}
	b.screenshot("05-quarantine")
	b.load(chromedp.Click(chromedp.CSS(heldTR + ` a.release`)))
	b.wantPath("/quarantine/" + held + "/release")
	b.waitVisible(`form#confirm`)
	b.screenshot("06-confirm")
	b.load(chromedp.Click(chromedp.CSS(`#confirm button[type=submit]`)))
	b.wantPath("/quarantine")
	if flash := b.text("#flash"); !strings.Contains(flash, held) || !strings.Contains(flash, "released") {
		t.Errorf("after the release the page says %q; want %s released", flash, held)
	}
	if n := len(b.nodes(heldTR)); n != 0 {
		t.Errorf("the quarantine list still shows %s", held)
	}
	b.screenshot("07-released")
	if _, _, ok := pf.held(t, held); ok {
		t.Errorf("%s is still in Postfix's hold queue", held)
	}
	waitDelivery(t, pf.mailbox(), "web-held")

	// The release in the log: on the transaction's page, and in mxguard
	// log show.
	b.navigate(fmt.Sprintf("/log/%d", heldRow.ID))
	released := regexp.MustCompile(`quarantine\s+released\s+by web:` + regexp.QuoteMeta(webAdmin))
	if checks := b.text("#checks"); !released.MatchString(checks) {
		t.Errorf("the held message's checks do not show the release (%q):\n%s", released, checks)
	}
	b.screenshot("08-released-detail")
	if out := con.mxguard(t, "log", "show", "-db", ph.mx.db, held); !strings.Contains(out, "web:"+webAdmin) {
		t.Errorf("mxguard log show %s does not name web:%s:\n%s", held, webAdmin, out)
	}

	// Logging out ends the session on the server: its cookie, replayed,
	// is sent to the login page.
	cookie := b.sessionCookie()
	if code, _ := con.get(t, "/log", cookie); code != http.StatusOK {
		t.Fatalf("GET /log with the session's cookie: %d; want 200", code)
	}
	b.load(chromedp.Click(chromedp.CSS(`#logout [type=submit]`)))
	b.wantPath("/login")
	b.waitVisible("form#login")
	b.screenshot("09-logged-out")
	b.navigate("/log")
	b.wantPath("/login")
	if code, loc := con.get(t, "/log", cookie); code != http.StatusSeeOther && code != http.StatusFound || !strings.HasPrefix(loc, "/login") {
		t.Errorf("GET /log with the ended session's cookie: %d to %q; want a redirect to /login", code, loc)
	}
	t.Logf("browser session: %v; screenshots in %s", time.Since(start).Round(time.Millisecond), b.shots)
}

// sendWebMail sends s through Postfix and returns the queue id of the
// accepted message.
func sendWebMail(t *testing.T, pf *postfix, s swaksRun) string {
	t.Helper()
	s.helo = "client.test"
	res := swaks(t, pf.smtpAddr(), pf.client(s.client), s)
	r, ok := res.reply(".")
	if !ok || r.code != "250" || pf.queueID(r) == "" {
		t.Fatalf("swaks from <%s>: reply to the end of DATA %q; want 250 with a queue id\n%s", s.from, r, res.transcript)
	}
	return pf.queueID(r)
}

// webConsole is "mxguard web", serving the console apart from the milter
// with the private Postfix's commands at hand for releasing mail.
type webConsole struct {
	bin, cfg string
	url      string // "http://127.0.0.1:PORT"

	output syncbuf.Buffer
}

func (c *webConsole) Write(p []byte) (int, error) { return c.output.Write(p) }

func (c *webConsole) log() string { return c.output.String() }

var consoleListening = regexp.MustCompile(`msg="web console listening" url=(http://127\.0\.0\.1:\d+)/`)

// startWebConsole writes web.toml, mxguard's configuration with a [web]
// section, adds the administrator, and starts mxguard web on a free
// loopback port against the phase's transaction log and Postfix. Not
// mxguard serve: the console there has no Postfix configuration directory
// to pass to postsuper -c.
func startWebConsole(t *testing.T, ph *phase, pf *postfix) *webConsole {
	t.Helper()
	base, err := os.ReadFile(ph.mx.cfg)
	if err != nil {
		t.Fatal(err)
	}
	c := &webConsole{bin: ph.mx.bin, cfg: filepath.Join(ph.dir, "web.toml")}
	listen := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cfg := fmt.Sprintf("%s\n[web]\nlisten = %q\ndb = %q\n", base, listen, filepath.Join(ph.dir, "web.db"))
	if err := os.WriteFile(c.cfg, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}

	add := exec.Command(c.bin, "user", "add", "-config", c.cfg, "-global", "-role", "admin", webAdmin)
	add.Stdin = strings.NewReader(webPassword + "\n")
	if out, err := runBounded(add); err != nil {
		t.Fatalf("mxguard user add: %v\n%s", err, out)
	}

	// postsuper and postqueue from the private copy, as in
	// postfix-instance.sh's run and demo.sh's quarantine.
	root := os.Getenv("POSTFIX_ROOT")
	if root == "" {
		root = "/var/cache/mxguard/postfix"
	}
	cmd := exec.Command(c.bin, "web", "-config", c.cfg, "-postfix-config", filepath.Join(pf.dir, "conf"))
	cmd.Env = append(os.Environ(),
		"PATH="+filepath.Join(root, "usr", "sbin")+":"+os.Getenv("PATH"),
		"LD_LIBRARY_PATH="+filepath.Join(root, "usr", "lib", "postfix"))
	logf, err := os.Create(filepath.Join(ph.dir, "web.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, io.MultiWriter(logf, c)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("mxguard web's exit after SIGTERM: %v", err)
			}
		case <-time.After(waitFor):
			cmd.Process.Kill()
			<-exited
			t.Errorf("mxguard web did not stop within %v of SIGTERM", waitFor)
		}
		logf.Close()
		if t.Failed() {
			t.Logf("mxguard web's log:\n%s", c.log())
		}
	})
	deadline := time.Now().Add(waitFor)
	for {
		if m := consoleListening.FindStringSubmatch(c.log()); m != nil {
			c.url = m[1]
			break
		}
		select {
		case err := <-exited:
			t.Fatalf("mxguard web exited before listening: %v\n%s", err, c.log())
		case <-time.After(25 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("mxguard web did not listen within %v\n%s", waitFor, c.log())
		}
	}
	if c.url != "http://"+listen {
		t.Fatalf("mxguard web listens at %s; configured %s", c.url, listen)
	}
	return c
}

// runBounded runs cmd, killing it after waitFor, and returns its output.
func runBounded(cmd *exec.Cmd) ([]byte, error) {
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	timer := time.AfterFunc(waitFor, func() { cmd.Process.Kill() })
	defer timer.Stop()
	err := cmd.Wait()
	return out.Bytes(), err
}

// mxguard runs an mxguard command and returns its output.
func (c *webConsole) mxguard(t *testing.T, args ...string) string {
	t.Helper()
	out, err := runBounded(exec.Command(c.bin, args...))
	if err != nil {
		t.Fatalf("mxguard %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// get requests path with the session cookie, outside the browser, and
// returns the status and, for a redirect, where to.
func (c *webConsole) get(t *testing.T, path string, cookie *http.Cookie) (int, string) {
	t.Helper()
	client := &http.Client{
		Timeout:       waitFor,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	req, err := http.NewRequest("GET", c.url+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.AddCookie(cookie)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("Location")
}

// browser is one headless Chromium tab on the console.
type browser struct {
	t     *testing.T
	ctx   context.Context // the tab's; each step runs under its own timeout
	base  string
	shots string // the screenshots' directory
}

// newBrowser starts Chromium (Debian's /usr/bin/chromium) headless, as
// root without its sandbox, and opens a tab. The browser's whole life is
// bounded by browserTimeout.
func newBrowser(t *testing.T, base string) *browser {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatal(err)
	}
	shots := filepath.Join(os.TempDir(), "mxguard-e2e-web-screens")
	if out := os.Getenv(outEnv); out != "" {
		shots = filepath.Join(out, "web")
	}
	if err := os.RemoveAll(shots); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(shots, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshots: %s", shots)

	life, cancelLife := context.WithTimeout(context.Background(), browserTimeout)
	chromeOut := &syncbuf.Buffer{}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox,
		chromedp.WindowSize(1280, 800),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("no-proxy-server", true), // everything is on loopback
		chromedp.CombinedOutput(chromeOut),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(life, opts...)
	ctx, cancelTab := chromedp.NewContext(allocCtx)
	t.Cleanup(func() {
		cancelTab()
		cancelAlloc()
		cancelLife()
		if out := chromeOut.String(); t.Failed() && out != "" {
			t.Logf("Chromium's output:\n%s", out)
		}
	})
	// The first Run starts the browser; it must not have a shorter
	// context than the browser's life.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("starting %s: %v\n%s", path, err, chromeOut.String())
	}
	return &browser{t: t, ctx: ctx, base: base, shots: shots}
}

// step runs f with a context that ends after stepTimeout.
func (b *browser) step(what string, f func(ctx context.Context) error) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, stepTimeout)
	defer cancel()
	if err := f(ctx); err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("not within %v: %w", stepTimeout, err)
		}
		b.t.Fatalf("browser: %s: %v (at %s)", what, err, b.locationString())
	}
}

// do runs actions that load no page.
func (b *browser) do(actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	b.step("action", func(ctx context.Context) error { return chromedp.Do(ctx, actions...) })
}

// load runs actions that load a page (a click on a link, a form's
// submission), waits for it and requires a 200.
func (b *browser) load(actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	b.step("loading a page", func(ctx context.Context) error {
		resp, err := chromedp.RunResponse(ctx, actions...)
		if err != nil {
			return err
		}
		if resp.Status != http.StatusOK {
			return fmt.Errorf("%s: status %d", resp.URL, resp.Status)
		}
		return nil
	})
}

// navigate opens path on the console and requires a 200 (after redirects).
func (b *browser) navigate(path string) {
	b.t.Helper()
	b.step("opening "+path, func(ctx context.Context) error {
		resp, err := chromedp.Run(ctx, chromedp.NavigateResponse(b.base+path))
		if err != nil {
			return err
		}
		if resp.Status != http.StatusOK {
			return fmt.Errorf("%s: status %d", resp.URL, resp.Status)
		}
		return nil
	})
}

func (b *browser) waitVisible(css string) {
	b.t.Helper()
	b.step("waiting for "+css, func(ctx context.Context) error {
		return chromedp.Do(ctx, chromedp.WaitVisible(chromedp.CSS(css)))
	})
}

// text is the visible text of the first element matching css.
func (b *browser) text(css string) string {
	b.t.Helper()
	var s string
	b.step("reading "+css, func(ctx context.Context) (err error) {
		s, err = chromedp.Run(ctx, chromedp.Text(chromedp.CSS(css)))
		return err
	})
	return strings.TrimSpace(s)
}

// nodes returns the elements matching css, none included, without
// waiting for them.
func (b *browser) nodes(css string) []*chromedp.Node {
	b.t.Helper()
	var ns []*chromedp.Node
	b.step("finding "+css, func(ctx context.Context) (err error) {
		ns, err = chromedp.Run(ctx, chromedp.Nodes(chromedp.CSSAll(css), chromedp.AtLeast(0)))
		return err
	})
	return ns
}

func (b *browser) location() *url.URL {
	b.t.Helper()
	u, err := url.Parse(b.locationString())
	if err != nil {
		b.t.Fatal(err)
	}
	return u
}

func (b *browser) locationString() string {
	ctx, cancel := context.WithTimeout(b.ctx, stepTimeout)
	defer cancel()
	loc, err := chromedp.Run(ctx, chromedp.Location())
	if err != nil {
		return fmt.Sprintf("(location: %v)", err)
	}
	return loc
}

// wantPath requires the page shown to be path on the console.
func (b *browser) wantPath(path string) {
	b.t.Helper()
	u := b.location()
	if u.Scheme+"://"+u.Host != b.base || u.Path != path {
		b.t.Fatalf("browser at %s; want %s%s", u, b.base, path)
	}
}

// screenshot saves the whole page as NAME.png.
func (b *browser) screenshot(name string) {
	b.t.Helper()
	var png []byte
	b.step("screenshot "+name, func(ctx context.Context) (err error) {
		png, err = chromedp.Run(ctx, chromedp.FullScreenshot(100))
		return err
	})
	if err := os.WriteFile(filepath.Join(b.shots, name+".png"), png, 0o644); err != nil {
		b.t.Fatal(err)
	}
}

// sessionCookie is the console's session cookie as the browser holds it.
func (b *browser) sessionCookie() *http.Cookie {
	b.t.Helper()
	var res network.GetCookiesResult
	b.step("reading cookies", func(ctx context.Context) (err error) {
		res, err = chromedp.Call(ctx, network.GetCookies, network.GetCookiesParams{URLs: []string{b.base + "/"}})
		return err
	})
	for _, c := range res.Cookies {
		if c.Name == "mxguard_session" {
			return &http.Cookie{Name: c.Name, Value: c.Value}
		}
	}
	b.t.Fatalf("the browser has no mxguard_session cookie for %s: %+v", b.base, res.Cookies)
	return nil
}
