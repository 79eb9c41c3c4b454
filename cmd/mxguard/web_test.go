package main

import (
	"context"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/syncbuf"
	"github.com/mxguard/mxguard/logstore"
	"github.com/mxguard/mxguard/policy"
	"github.com/mxguard/mxguard/quarantine"
	"github.com/mxguard/mxguard/web"
)

// lockedQueue is a hold queue in memory that the console's handlers may
// use from their goroutines.
type lockedQueue struct {
	mu       sync.Mutex
	msgs     []quarantine.Message
	released []string
}

func (q *lockedQueue) Held(context.Context) ([]quarantine.Message, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return slices.Clone(q.msgs), nil
}

func (q *lockedQueue) Release(_ context.Context, id string) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.released = append(q.released, id)
	q.msgs = slices.DeleteFunc(q.msgs, func(m quarantine.Message) bool { return m.QueueID == id })
	return nil
}

func (q *lockedQueue) Delete(context.Context, string) error { return nil }

var consoleURL = regexp.MustCompile(`msg="web console listening" url=(\S+)`)

// waitConsole waits for the console's address in a log.
func waitConsole(t *testing.T, log func() string) string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if m := consoleURL.FindStringSubmatch(log()); m != nil {
			return strings.TrimSuffix(m[1], "/")
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("the console did not start:\n%s", log())
	return ""
}

// consoleClient logs in to the console at base and returns a client with
// the session, and the session's CSRF token.
func consoleClient(t *testing.T, base, email, password string) (*http.Client, string) {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, Timeout: 10 * time.Second}
	resp, err := c.PostForm(base+"/login", url.Values{"email": {email}, "password": {password}})
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindSubmatch(body)
	if resp.StatusCode != http.StatusOK || resp.Request.URL.Path != "/" || m == nil {
		t.Fatalf("login: %d at %s\n%s", resp.StatusCode, resp.Request.URL, body)
	}
	return c, string(m[1])
}

func get(t *testing.T, c *http.Client, u string) (int, string) {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// TestWebCommand runs mxguard web alone against a log, logs in as a user
// mxguard user created, and releases a held message: recorded in the log
// with the user's name, though the console reads the log read-only.
func TestWebCommand(t *testing.T) {
	fastHashes(t)
	cfg, _ := webConfig(t, "")
	withStdin(t, "a long password\n")
	checkCLI(t, []cliCase{{[]string{"user", "add", "-config", cfg, "-org", "example", "-role", "admin", "admin@example.com"}, 0, nil, nil}})

	c, err := policy.Load(cfg)
	if err != nil {
		t.Fatal(err)
	}
	st, err := logstore.Open(logstore.Options{Path: c.Log.Path})
	if err != nil {
		t.Fatal(err)
	}
	held := &logstore.Record{StartedAt: time.Now().Add(-time.Hour), QueueID: "C648F988526", MailFrom: "billing@sender.test",
		Subject: "Invoice", Organization: "example", Action: "quarantine", Reason: "SPFFail",
		Recipients: []logstore.Recipient{{Address: "bob@example.com", Organization: "example", Action: "quarantine"}}}
	other := &logstore.Record{StartedAt: time.Now().Add(-time.Hour), QueueID: "ACME000001", MailFrom: "x@y.test",
		Subject: "acme's", Organization: "acme", Action: "accept"}
	for _, r := range []*logstore.Record{held, other} {
		if err := st.Save(t.Context(), r); err != nil {
			t.Fatal(err)
		}
	}
	st.Close()
	q := &lockedQueue{msgs: []quarantine.Message{{QueueID: "C648F988526", Arrival: time.Now().Add(-time.Hour), Sender: "billing@sender.test",
		Recipients: []string{"bob@example.com"}}}}
	old := newMTA
	var pfConfig string
	newMTA = func(dir string) quarantine.MTA { pfConfig = dir; return q }
	t.Cleanup(func() { newMTA = old })

	ctx, cancel := context.WithCancel(t.Context())
	var stderr syncbuf.Buffer
	done := make(chan int, 1)
	go func() {
		done <- webMain(ctx, []string{"-config", cfg, "-listen", "127.0.0.1:0", "-postfix-config", "/etc/postfix-out"}, io.Discard, &stderr)
	}()
	base := waitConsole(t, stderr.String)
	if pfConfig != "/etc/postfix-out" {
		t.Errorf("-postfix-config: %q", pfConfig)
	}

	client, token := consoleClient(t, base, "admin@example.com", "a long password")
	code, body := get(t, client, base+"/log")
	if code != 200 || !strings.Contains(body, `data-id="`+strconv.FormatInt(held.ID, 10)+`"`) || strings.Contains(body, "acme&#39;s") {
		t.Errorf("/log: %d\n%s", code, body)
	}
	if code, _ := get(t, client, base+"/log/"+strconv.FormatInt(other.ID, 10)); code != http.StatusNotFound {
		t.Errorf("another organisation's transaction: %d", code)
	}
	resp, err := client.PostForm(base+"/quarantine/C648F988526/release", url.Values{"csrf": {token}})
	if err != nil {
		t.Fatal(err)
	}
	body2, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body2), "Recorded on transaction "+strconv.FormatInt(held.ID, 10)) {
		t.Errorf("release: %d\n%s", resp.StatusCode, body2)
	}
	ro, err := logstore.OpenReadOnly(c.Log.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	r, err := ro.Get(t.Context(), held.ID)
	if err != nil {
		t.Fatal(err)
	}
	if ev := r.Evidence[len(r.Evidence)-1]; ev.Check != "quarantine" || ev.Result != "released" || !strings.HasPrefix(ev.Detail, "by web:admin@example.com at ") {
		t.Errorf("recorded %+v", ev)
	}

	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("mxguard web: exit %d\n%s", code, stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("mxguard web did not stop")
	}
	if !strings.Contains(stderr.String(), "web console stopped") {
		t.Errorf("log:\n%s", stderr.String())
	}
}

func TestWebCommandErrors(t *testing.T) {
	cfg, _ := writeLog(t, "")
	checkCLI(t, []cliCase{
		{[]string{"web", "-config", cfg}, 1, nil, []string{"[web] listen is not set"}},
		{[]string{"web", "-config", cfg, "extra"}, 2, nil, []string{"unexpected argument"}},
		{[]string{"web", "-h"}, 0, []string{"usage: mxguard web"}, nil},
		{[]string{"web", "-bogus"}, 2, nil, []string{"flag provided but not defined"}},
		{[]string{"web", "-config", cfg, "-listen", "localhost:80"}, 2, nil, []string{"want IP:PORT"}},
	})
	bad, _ := webConfig(t, `tls_cert = "/nonexistent.pem"
tls_key = "/nonexistent.key"`)
	checkCLI(t, []cliCase{
		{[]string{"web", "-config", bad}, 1, nil, []string{"[web] listen is not set", "or give -listen"}},
		{[]string{"web", "-config", bad, "-listen", "127.0.0.1:0"}, 1, nil, []string{"tls_cert, tls_key"}},
	})
}

// TestServeWithConsole: mxguard serve serves the console when [web]
// listen is set, and stops it cleanly.
func TestServeWithConsole(t *testing.T) {
	fastHashes(t)
	dir := t.TempDir()
	accounts := dir + "/web.db"
	acc, err := web.OpenAccounts(accounts)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := acc.AddUser(t.Context(), "root@ops.test", "", web.RoleViewer, "a long password", time.Now()); err != nil {
		t.Fatal(err)
	}
	acc.Close()
	d := startDaemon(t, "", "[web]\nlisten = \"127.0.0.1:0\"\ndb = \""+accounts+"\"\n")
	base := waitConsole(t, d.log)
	client, _ := consoleClient(t, base, "root@ops.test", "a long password")
	if code, body := get(t, client, base+"/log"); code != 200 || !strings.Contains(body, `<form id="search"`) {
		t.Errorf("/log: %d\n%s", code, body)
	}
	d.stop()
	if !strings.Contains(d.log(), "mxguard stopped") {
		t.Errorf("log:\n%s", d.log())
	}
}
