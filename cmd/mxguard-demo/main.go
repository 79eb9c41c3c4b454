// Command mxguard-demo plays the MTA side of a few SMTP transactions against
// a running "mxguard serve", the way Postfix talks to its milters, prints
// what mxguard answered to each, and then prints the rows mxguard wrote to
// its transaction log. "make demo" runs it; it is a demonstration, not a
// test.
//
//	mxguard-demo -milter 127.0.0.1:8894 -db /var/lib/mxguard/mxguard.db
//
// With -log-only it plays nothing and just prints the log, as "make demo"
// does after sending mail through a real Postfix:
//
//	mxguard-demo -log-only -skip-idle -db /var/lib/mxguard/mxguard.db
//
// The scenarios use the domains of examples/mxguard.toml: example.com and
// example.net belong to the organisation "example", acme.test to "acme"
// (both are served by this gateway); elsewhere.test is outside.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/d--j/go-milter"

	"github.com/mxguard/mxguard/logstore"
)

// scenario is one SMTP connection with one transaction.
type scenario struct {
	title    string
	clientIP string
	ptr      string // the client's name as the MTA verified it
	helo     string
	authUser string // "" for an unauthenticated session
	from     string
	rcpts    []string
	headers  [][2]string // sent with a leading space, as Postfix does
}

func message(from, to, subject string, extra ...[2]string) [][2]string {
	h := append([][2]string{}, extra...)
	return append(h,
		[2]string{"From", " " + from},
		[2]string{"To", " " + to},
		[2]string{"Subject", " " + subject},
		[2]string{"Message-Id", " <" + strings.ReplaceAll(subject, " ", "-") + "@demo.test>"},
	)
}

var scenarios = []scenario{{
	title:    "trusted host relays to an outside address (outbound)",
	clientIP: "127.0.0.1", ptr: "localhost", helo: "app.example.com",
	from: "app@example.com", rcpts: []string{"partner@elsewhere.test"},
	headers: message("app@example.com", "partner@elsewhere.test", "monthly report"),
}, {
	title:    `authenticated "alice" sends as herself to an outside address`,
	clientIP: "203.0.113.5", ptr: "laptop.example.net", helo: "laptop", authUser: "alice",
	from: "alice@example.com", rcpts: []string{"carol@elsewhere.test"},
	headers: message("Alice <alice@example.com>", "carol@elsewhere.test", "lunch"),
}, {
	title:    `authenticated "alice" sends as bob`,
	clientIP: "203.0.113.5", ptr: "laptop.example.net", helo: "laptop", authUser: "alice",
	from: "bob@example.com", rcpts: []string{"carol@elsewhere.test"},
	headers: message("Bob <bob@example.com>", "carol@elsewhere.test", "not really bob"),
}, {
	title:    "unauthenticated outside client tries to relay",
	clientIP: "192.0.2.1", ptr: "unknown", helo: "mail.sender.test",
	from: "x@sender.test", rcpts: []string{"victim@elsewhere.test"},
	headers: message("x@sender.test", "victim@elsewhere.test", "relay me"),
}, {
	title:    "inbound mail from an outside sender (its SPF result depends on this machine's DNS)",
	clientIP: "192.0.2.1", ptr: "unknown", helo: "mail.sender.test",
	from: "news@sender.test", rcpts: []string{"someone@example.com"},
	headers: message("news@sender.test", "someone@example.com", "newsletter"),
}, {
	title:    "inbound mail with a forged Authentication-Results of ours",
	clientIP: "192.0.2.1", ptr: "unknown", helo: "mail.sender.test",
	from: "ceo@sender.test", rcpts: []string{"someone@example.com"},
	headers: message("ceo@sender.test", "someone@example.com", "wire transfer",
		[2]string{"Authentication-Results", " mx.example.com; spf=pass smtp.mailfrom=ceo@example.com"}),
}}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("mxguard-demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("milter", "127.0.0.1:8894", "mxguard's milter address: host:port, inet:host:port or unix:/path")
	db := fs.String("db", "", "mxguard's transaction log (SQLite) to print afterwards; empty to skip")
	timeout := fs.Duration("timeout", 30*time.Second, "how long to wait for each milter reply")
	logOnly := fs.Bool("log-only", false, "play nothing; print every row of the transaction log at -db")
	skipIdle := fs.Bool("skip-idle", false, "leave out connections that ended without a transaction (reason NoTransaction)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *logOnly {
		if *db == "" {
			fmt.Fprintln(stderr, "mxguard-demo: -log-only needs -db")
			return 2
		}
		if err := printLog(stdout, *db, time.Time{}, 0, *skipIdle); err != nil {
			fmt.Fprintln(stderr, "mxguard-demo:", err)
			return 1
		}
		return 0
	}
	network, address := milterAddr(*addr)
	client := milter.NewClient(network, address,
		milter.WithAction(milter.AllClientSupportedActionMasks),
		milter.WithReadTimeout(*timeout))

	start := time.Now().Truncate(time.Millisecond) // the log's precision
	for i, sc := range scenarios {
		lines, err := play(client, sc, fmt.Sprintf("DEMO%04d", i+1))
		if err != nil {
			fmt.Fprintf(stderr, "mxguard-demo: scenario %d: %v (is mxguard serve running and listening on %s?)\n", i+1, err, *addr)
			return 1
		}
		fmt.Fprintf(stdout, "%d. %s\n", i+1, sc.title)
		for _, l := range lines {
			fmt.Fprintf(stdout, "   %s\n", l)
		}
		fmt.Fprintln(stdout)
	}
	if *db == "" {
		return 0
	}
	if err := printLog(stdout, *db, start, len(scenarios), *skipIdle); err != nil {
		fmt.Fprintln(stderr, "mxguard-demo:", err)
		return 1
	}
	return 0
}

// milterAddr accepts the address forms of mxguard's milter.listen and
// Postfix's smtpd_milters as well as a bare host:port.
func milterAddr(s string) (network, address string) {
	switch {
	case strings.HasPrefix(s, "inet:"):
		return "tcp", strings.TrimPrefix(s, "inet:")
	case strings.HasPrefix(s, "inet6:"):
		return "tcp", strings.TrimPrefix(s, "inet6:")
	case strings.HasPrefix(s, "unix:"):
		return "unix", strings.TrimPrefix(s, "unix:")
	case strings.HasPrefix(s, "/"):
		return "unix", s
	}
	return "tcp", s
}

// play runs one scenario on its own milter connection, as an MTA does per
// SMTP connection, and describes what happened. An error means the milter
// could not be talked to at all.
func play(client *milter.Client, sc scenario, queueID string) ([]string, error) {
	macros := milter.NewMacroBag()
	macros.Set(milter.MacroMTAFQDN, "mx.example.com")
	macros.Set(milter.MacroDaemonName, "smtpd")
	s, err := client.Session(macros)
	if err != nil {
		return nil, err
	}
	defer s.Close()

	conn := fmt.Sprintf("%s [%s], HELO %s", sc.clientIP, sc.ptr, sc.helo)
	if sc.authUser != "" {
		conn += ", AUTH PLAIN as " + sc.authUser
	}
	var sent []string
	describe := func(reply string) []string {
		lines := []string{"client " + conn}
		if len(sent) > 0 {
			lines = append(lines, "sent   "+strings.Join(sent, " "))
		}
		return append(lines, "reply  "+reply)
	}
	refused := func(what string, a *milter.Action) []string {
		return describe(fmt.Sprintf("%s refused: %s", what, a.SMTPReply))
	}

	if a, err := s.Conn(sc.ptr, milter.FamilyInet, 50000, sc.clientIP); err != nil {
		return nil, err
	} else if a.StopProcessing() {
		return refused("connect", a), nil
	}
	if a, err := s.Helo(sc.helo); err != nil {
		return nil, err
	} else if a.StopProcessing() {
		return refused("HELO", a), nil
	}

	if sc.authUser != "" {
		macros.Set(milter.MacroAuthAuthen, sc.authUser)
		macros.Set(milter.MacroAuthType, "PLAIN")
	}
	sent = append(sent, "MAIL FROM:<"+sc.from+">")
	if a, err := s.Mail(sc.from, ""); err != nil {
		return nil, err
	} else if a.StopProcessing() {
		return refused("MAIL FROM", a), nil
	}

	var rcptReplies []string
	accepted := 0
	for _, rcpt := range sc.rcpts {
		sent = append(sent, "RCPT TO:<"+rcpt+">")
		a, err := s.Rcpt(rcpt, "")
		if err != nil {
			return nil, err
		}
		if a.StopProcessing() {
			rcptReplies = append(rcptReplies, fmt.Sprintf("RCPT TO:<%s> refused: %s", rcpt, a.SMTPReply))
			continue
		}
		accepted++
	}
	if accepted == 0 {
		// The SMTP client gets no DATA and says QUIT.
		return describe(strings.Join(rcptReplies, "; ")), nil
	}

	// Postfix knows the queue id from here on.
	macros.Set(milter.MacroQueueId, queueID)
	sent = append(sent, fmt.Sprintf("DATA (queue id %s, %d header fields)", queueID, len(sc.headers)))
	if a, err := s.DataStart(); err != nil {
		return nil, err
	} else if a.StopProcessing() {
		return refused("DATA", a), nil
	}
	for _, h := range sc.headers {
		if a, err := s.HeaderField(h[0], h[1], nil); err != nil {
			return nil, err
		} else if a.StopProcessing() {
			return refused("header "+h[0], a), nil
		}
	}
	if a, err := s.HeaderEnd(); err != nil {
		return nil, err
	} else if a.StopProcessing() {
		return refused("end of header", a), nil
	}
	mods, a, err := s.BodyReadFrom(strings.NewReader("Hello,\r\nthis is a demo message.\r\n"))
	if err != nil {
		return nil, err
	}
	var reply string
	switch {
	case a.StopProcessing():
		reply = "end of message refused: " + a.SMTPReply
	case a.Type == milter.ActionDiscard:
		reply = "accepted, then discarded"
	default:
		reply = "accepted"
	}
	rcptReplies = append(rcptReplies, reply)
	lines := describe(strings.Join(rcptReplies, "; "))
	for _, m := range mods {
		lines = append(lines, "       "+edit(m, sc.headers))
	}
	return lines, nil
}

// edit describes one modification the milter asked for at end of message.
func edit(m milter.ModifyAction, sent [][2]string) string {
	switch m.Type {
	case milter.ActionInsertHeader, milter.ActionAddHeader:
		return fmt.Sprintf("+ %s:%s", m.HeaderName, m.HeaderValue)
	case milter.ActionChangeHeader:
		if m.HeaderValue == "" {
			return fmt.Sprintf("- %s #%d (was:%s)", m.HeaderName, m.HeaderIndex, nthHeader(sent, m.HeaderName, int(m.HeaderIndex)))
		}
		return fmt.Sprintf("~ %s #%d:%s", m.HeaderName, m.HeaderIndex, m.HeaderValue)
	case milter.ActionQuarantine:
		return "quarantined: " + m.Reason
	case milter.ActionAddRcpt:
		return "+ recipient " + m.Rcpt
	case milter.ActionDelRcpt:
		return "- recipient " + m.Rcpt
	case milter.ActionChangeFrom:
		return "sender changed to " + m.From
	case milter.ActionReplaceBody:
		return "body replaced"
	}
	return fmt.Sprintf("%+v", m)
}

// nthHeader returns the value of the n-th (1-based) sent header named name;
// milter header indexes count per name.
func nthHeader(sent [][2]string, name string, n int) string {
	for _, h := range sent {
		if strings.EqualFold(h[0], name) {
			if n--; n == 0 {
				return h[1]
			}
		}
	}
	return " ?"
}

// printLog prints the transaction log rows written since start. mxguard
// writes a row when a transaction ends, some only when the MTA closes the
// connection, so it waits briefly for all of them. skipIdle leaves out the
// connections without a transaction: behind Postfix with XCLIENT, each
// message has one, the proxy's own connection before XCLIENT.
func printLog(w io.Writer, path string, start time.Time, want int, skipIdle bool) error {
	st, err := logstore.OpenReadOnly(path)
	if err != nil {
		return err
	}
	defer st.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var rows []logstore.Record
	for {
		recs, err := st.Recent(ctx, 1000)
		if err != nil {
			return err
		}
		rows = rows[:0]
		for i := len(recs) - 1; i >= 0; i-- { // oldest first
			if !recs[i].StartedAt.Before(start) {
				rows = append(rows, recs[i])
			}
		}
		if len(rows) >= want {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: only %d of the %d transaction rows were written within 10s", path, len(rows), want)
		case <-time.After(50 * time.Millisecond):
		}
	}

	fmt.Fprintf(w, "The transaction log %s:\n\n", path)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tQUEUE ID\tCLIENT\tFROM\tRECIPIENTS\tDIRECTION\tSPF\tACTION\tREASON\tREPLY")
	skipped := 0
	for _, r := range rows {
		if skipIdle && r.Reason == "NoTransaction" {
			skipped++
			continue
		}
		var rcpts []string
		for _, rc := range r.Recipients {
			rcpts = append(rcpts, rc.Address)
		}
		client := r.ClientIP
		if r.AuthUser != "" {
			client += " (" + r.AuthUser + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
			r.StartedAt.Local().Format("15:04:05.000"), dash(r.QueueID), dash(client), dash(r.MailFrom),
			dash(strings.Join(rcpts, ",")), dash(r.Direction), dash(r.SPF), r.Action, dash(r.Reason), dash(r.Reply))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if skipped > 0 {
		fmt.Fprintf(w, "\n(%d connections that ended without a transaction are not shown)\n", skipped)
	}
	return nil
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
