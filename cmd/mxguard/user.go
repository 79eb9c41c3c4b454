package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mxguard/mxguard/policy"
	"github.com/mxguard/mxguard/web"
)

const userUsage = `usage:
  mxguard user add    [-config PATH] (-org NAME | -global) -role admin|viewer EMAIL
  mxguard user passwd [-config PATH] EMAIL
  mxguard user del    [-config PATH] EMAIL
  mxguard user list   [-config PATH]

Accounts of the web console, in [web] db.

add      create an account. -org NAME: a user of that organisation (one of
         the configuration's [[organization]] names), who sees its
         transactions and held mail only; -global: an operator who sees
         every organisation. -role admin may release and delete held mail;
         -role viewer only looks.
passwd   set a new password; the user's sessions end
del      delete an account; its sessions end
list     every account, with its organisation, role and last login

The password is asked for twice on a terminal, without echo; otherwise it
is the first line of standard input (echo -n ... | mxguard user add ...
is for scripts; never put a password on a command line). At least
10 characters, at most 72 bytes.
`

// userStdin is where passwords are read from; tests replace it.
var userStdin = os.Stdin

func cmdUser(args []string, stdout, stderr io.Writer) int {
	sub, code, ok := subcommand("user", args, oneOf("add", "passwd", "del", "list"), userUsage, stdout, stderr)
	if !ok {
		return code
	}
	fs := flag.NewFlagSet("mxguard user "+sub, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	cfgPath := fs.String("config", policy.DefaultPath, "")
	var org, role string
	var global bool
	if sub == "add" {
		fs.StringVar(&org, "org", "", "")
		fs.BoolVar(&global, "global", false, "")
		fs.Func("role", "", choiceFlag(&role, web.RoleAdmin, web.RoleViewer))
	}
	rest, err := parseInterspersed(fs, args[1:])
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(stdout, userUsage)
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "mxguard user %s: %v\n(mxguard user -h lists the flags)\n", sub, err)
		return 2
	}
	switch {
	case sub == "list" && len(rest) > 0:
		fmt.Fprintf(stderr, "mxguard user list: unexpected argument %q\n", rest[0])
		return 2
	case sub != "list" && len(rest) != 1:
		fmt.Fprintf(stderr, "mxguard user %s: give one EMAIL\n", sub)
		return 2
	case sub == "add" && role == "":
		fmt.Fprintln(stderr, "mxguard user add: -role admin or -role viewer is required")
		return 2
	case sub == "add" && global == (org != ""):
		fmt.Fprintln(stderr, "mxguard user add: give -org NAME (a user of one organisation) or -global (an operator who sees all), one of them")
		return 2
	}
	cfg, err := policy.Load(*cfgPath)
	if err != nil {
		fmt.Fprintln(stderr, "mxguard:", err)
		return 1
	}
	if org != "" && !slices.ContainsFunc(cfg.Organizations, func(o policy.Organization) bool { return o.Name == org }) {
		var names []string
		for _, o := range cfg.Organizations {
			names = append(names, o.Name)
		}
		known := "none is configured"
		if len(names) > 0 {
			known = "the configured ones are " + strings.Join(names, ", ")
		}
		fmt.Fprintf(stderr, "mxguard user add: no organisation %q in %s (%s)\n", org, *cfgPath, known)
		return 1
	}
	var email string
	if sub != "list" {
		if email, err = web.NormalizeEmail(rest[0]); err != nil {
			fmt.Fprintf(stderr, "mxguard user %s: %v\n", sub, err)
			return 2
		}
	}
	accounts, err := web.OpenAccounts(cfg.Web.DB)
	if err != nil {
		fmt.Fprintln(stderr, "mxguard user:", err)
		return 1
	}
	defer accounts.Close()
	ctx := context.Background()

	switch sub {
	case "list":
		return userList(ctx, accounts, stdout, stderr)
	case "del":
		if err := accounts.DeleteUser(ctx, email); err != nil {
			fmt.Fprintln(stderr, "mxguard user del:", err)
			return 1
		}
		fmt.Fprintf(stdout, "%s deleted; their sessions ended\n", email)
		return 0
	case "add":
		// Before the password is typed: a taken email fails now.
		if _, err := accounts.User(ctx, email); err == nil {
			fmt.Fprintf(stderr, "mxguard user add: %s: %v; mxguard user passwd %s sets a new password\n", email, web.ErrUserExists, email)
			return 1
		}
	case "passwd":
		if _, err := accounts.User(ctx, email); err != nil {
			fmt.Fprintln(stderr, "mxguard user passwd:", err)
			return 1
		}
	}
	pw, err := readNewPassword(userStdin, stderr, email)
	if err != nil {
		fmt.Fprintf(stderr, "mxguard user %s: %v\n", sub, err)
		return 1
	}
	if sub == "passwd" {
		if err := accounts.SetPassword(ctx, email, pw); err != nil {
			fmt.Fprintln(stderr, "mxguard user passwd:", err)
			return 1
		}
		fmt.Fprintf(stdout, "%s: password changed; their sessions ended\n", email)
		return 0
	}
	u, err := accounts.AddUser(ctx, email, org, role, pw, time.Now())
	if err != nil {
		fmt.Fprintln(stderr, "mxguard user add:", err)
		return 1
	}
	fmt.Fprintf(stdout, "%s added: %s of %s\n", u.Email, u.Role, scopeOf(u))
	return 0
}

func scopeOf(u *web.User) string {
	if u.Global() {
		return "every organisation"
	}
	return "organisation " + u.Organization
}

func userList(ctx context.Context, accounts *web.Accounts, stdout, stderr io.Writer) int {
	users, err := accounts.Users(ctx)
	if err != nil {
		fmt.Fprintln(stderr, "mxguard user list:", err)
		return 1
	}
	if len(users) == 0 {
		fmt.Fprintln(stdout, "No users. mxguard user add creates one.")
		return 0
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "EMAIL\tORGANISATION\tROLE\tCREATED (UTC)\tLAST LOGIN (UTC)")
	for _, u := range users {
		org := u.Organization
		if u.Global() {
			org = "(global)"
		}
		last := "never"
		if !u.LastLogin.IsZero() {
			last = u.LastLogin.UTC().Format("2006-01-02 15:04")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", printable(u.Email, 80), printable(org, 40), u.Role, u.Created.UTC().Format("2006-01-02 15:04"), last)
	}
	if err := tw.Flush(); err != nil {
		fmt.Fprintln(stderr, "mxguard user list:", err)
		return 1
	}
	return 0
}

// readNewPassword reads a new password: on a terminal, twice and without
// echo; otherwise the first line of in.
func readNewPassword(in *os.File, prompt io.Writer, email string) (string, error) {
	if !isTerminal(in) {
		line, err := bufio.NewReader(io.LimitReader(in, 4096)).ReadString('\n')
		if err != nil && !(errors.Is(err, io.EOF) && line != "") {
			return "", errors.New("no password on standard input (give it on the first line)")
		}
		pw := strings.TrimRight(line, "\r\n")
		return pw, web.CheckPassword(pw)
	}
	for {
		fmt.Fprintf(prompt, "New password for %s: ", email)
		pw, err := readNoEcho(in)
		fmt.Fprintln(prompt)
		if err != nil {
			return "", err
		}
		if err := web.CheckPassword(pw); err != nil {
			fmt.Fprintf(prompt, "%v; again.\n", err)
			continue
		}
		fmt.Fprint(prompt, "Again: ")
		again, err := readNoEcho(in)
		fmt.Fprintln(prompt)
		if err != nil {
			return "", err
		}
		if again != pw {
			fmt.Fprintln(prompt, "The two differ; again.")
			continue
		}
		return pw, nil
	}
}

// readLine reads one line byte by byte, so that nothing after it is
// consumed (the terminal is in canonical mode: a line arrives whole).
func readLine(in io.Reader) (string, error) {
	var b []byte
	one := make([]byte, 1)
	for len(b) < 4096 {
		n, err := in.Read(one)
		if n == 1 {
			if one[0] == '\n' {
				return strings.TrimRight(string(b), "\r"), nil
			}
			b = append(b, one[0])
		}
		if err != nil {
			if errors.Is(err, io.EOF) && len(b) > 0 {
				return string(b), nil
			}
			return "", err
		}
	}
	return "", errors.New("line too long")
}
