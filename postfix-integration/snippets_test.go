// Package postfixintegration holds no code: its tests keep the MTA
// configuration snippets in this directory consistent with mxguard itself
// (the macros it requests, its default address and time limits).
package postfixintegration

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/d--j/go-milter"

	"github.com/mxguard/mxguard/policy"
)

// macroNames maps go-milter's macro constants to the macro names, so that
// the test can read milter/server.go's macroRequests from source. A macro
// missing here fails the test: add it (and it to the snippets).
var macroNames = map[string]milter.MacroName{
	"MacroMTAVersion": milter.MacroMTAVersion, "MacroMTAFQDN": milter.MacroMTAFQDN,
	"MacroDaemonName": milter.MacroDaemonName, "MacroDaemonAddr": milter.MacroDaemonAddr,
	"MacroDaemonPort": milter.MacroDaemonPort, "MacroIfName": milter.MacroIfName, "MacroIfAddr": milter.MacroIfAddr,
	"MacroTlsVersion": milter.MacroTlsVersion, "MacroCipher": milter.MacroCipher, "MacroCipherBits": milter.MacroCipherBits,
	"MacroCertSubject": milter.MacroCertSubject, "MacroCertIssuer": milter.MacroCertIssuer,
	"MacroClientAddr": milter.MacroClientAddr, "MacroClientPort": milter.MacroClientPort,
	"MacroClientPTR": milter.MacroClientPTR, "MacroClientName": milter.MacroClientName,
	"MacroClientConnections": milter.MacroClientConnections, "MacroQueueId": milter.MacroQueueId,
	"MacroAuthType": milter.MacroAuthType, "MacroAuthAuthen": milter.MacroAuthAuthen,
	"MacroAuthSsf": milter.MacroAuthSsf, "MacroAuthAuthor": milter.MacroAuthAuthor,
	"MacroMailMailer": milter.MacroMailMailer, "MacroMailHost": milter.MacroMailHost, "MacroMailAddr": milter.MacroMailAddr,
	"MacroRcptMailer": milter.MacroRcptMailer, "MacroRcptHost": milter.MacroRcptHost, "MacroRcptAddr": milter.MacroRcptAddr,
	"MacroRFC1413AuthInfo": milter.MacroRFC1413AuthInfo, "MacroHopCount": milter.MacroHopCount,
	"MacroSenderHostName": milter.MacroSenderHostName, "MacroProtocolUsed": milter.MacroProtocolUsed,
	"MacroMTAPid": milter.MacroMTAPid, "MacroDateRFC822Origin": milter.MacroDateRFC822Origin,
	"MacroDateRFC822Current": milter.MacroDateRFC822Current, "MacroDateANSICCurrent": milter.MacroDateANSICCurrent,
	"MacroDateSecondsCurrent": milter.MacroDateSecondsCurrent,
}

// stageSettings names, per go-milter stage constant, the Postfix parameter
// and the Sendmail m4 define that list that stage's macros.
var stageSettings = map[string]struct{ postfix, sendmail string }{
	"StageConnect": {"milter_connect_macros", "confMILTER_MACROS_CONNECT"},
	"StageHelo":    {"milter_helo_macros", "confMILTER_MACROS_HELO"},
	"StageMail":    {"milter_mail_macros", "confMILTER_MACROS_ENVFROM"},
	"StageRcpt":    {"milter_rcpt_macros", "confMILTER_MACROS_ENVRCPT"},
	"StageData":    {"milter_data_macros", "confMILTER_MACROS_DATA"},
	"StageEOH":     {"milter_end_of_header_macros", "confMILTER_MACROS_EOH"},
	"StageEOM":     {"milter_end_of_data_macros", "confMILTER_MACROS_EOM"},
}

// requestedMacros reads milter/server.go's macroRequests from source:
// stage constant name -> macro names.
func requestedMacros(t *testing.T) map[string][]string {
	t.Helper()
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "../milter/server.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var lit *ast.CompositeLit
	ast.Inspect(f, func(n ast.Node) bool {
		if vs, ok := n.(*ast.ValueSpec); ok && len(vs.Names) == 1 && vs.Names[0].Name == "macroRequests" && len(vs.Values) == 1 {
			lit, _ = vs.Values[0].(*ast.CompositeLit)
		}
		return lit == nil
	})
	if lit == nil {
		t.Fatal("milter/server.go: no composite literal macroRequests; update this test to find the requested macros")
	}
	sel := func(e ast.Expr) string {
		s, ok := e.(*ast.SelectorExpr)
		if !ok {
			t.Fatalf("milter/server.go:%s: want milter.Name, have %T", fset.Position(e.Pos()), e)
		}
		return s.Sel.Name
	}
	req := make(map[string][]string)
	for _, elt := range lit.Elts {
		kv := elt.(*ast.KeyValueExpr)
		stage := sel(kv.Key)
		list, ok := kv.Value.(*ast.CompositeLit)
		if !ok {
			t.Fatalf("milter/server.go:%s: the macros of %s are not a list literal", fset.Position(kv.Pos()), stage)
		}
		for _, m := range list.Elts {
			id := sel(m)
			name, ok := macroNames[id]
			if !ok {
				t.Fatalf("milter/server.go requests milter.%s, unknown to this test: add it to macroNames, "+
					"and the macro to postfix/main.cf.snippet, sendmail/mxguard.mc.snippet and docs/flow.md", id)
			}
			req[stage] = append(req[stage], string(name))
		}
	}
	if len(req) == 0 {
		t.Fatal("milter/server.go: macroRequests is empty")
	}
	return req
}

// mainCF parses a main.cf: parameter -> value (the last one wins, as in
// Postfix; indented lines continue the previous one).
func mainCF(t *testing.T, path string) map[string]string {
	t.Helper()
	text, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	params := make(map[string]string)
	last := ""
	for _, line := range strings.Split(string(text), "\n") {
		trimmed := strings.TrimSpace(line)
		switch {
		case trimmed == "" || strings.HasPrefix(trimmed, "#"):
			continue
		case line[0] == ' ' || line[0] == '\t':
			if last == "" {
				t.Fatalf("%s: continuation line without a parameter: %q", path, line)
			}
			params[last] += " " + trimmed
		default:
			name, value, ok := strings.Cut(line, "=")
			if !ok {
				t.Fatalf("%s: not a parameter: %q", path, line)
			}
			last = strings.TrimSpace(name)
			params[last] = strings.TrimSpace(value)
		}
	}
	return params
}

var (
	m4Define = regexp.MustCompile("(?m)^define\\(`(confMILTER_MACROS_[A-Z]+)', `([^']*)'\\)dnl$")
	m4Filter = regexp.MustCompile("(?m)^INPUT_MAIL_FILTER\\(`mxguard', `([^']*)'\\)dnl$")
)

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestMacros: every macro mxguard requests is in the fallback lists of
// both MTAs, stage by stage.
func TestMacros(t *testing.T) {
	req := requestedMacros(t)
	pf := mainCF(t, "postfix/main.cf.snippet")
	mc := readFile(t, "sendmail/mxguard.mc.snippet")
	sm := make(map[string][]string)
	for _, m := range m4Define.FindAllStringSubmatch(mc, -1) {
		for _, name := range strings.Split(m[2], ",") {
			sm[m[1]] = append(sm[m[1]], strings.TrimSpace(name))
		}
	}
	for stage, macros := range req {
		set, ok := stageSettings[stage]
		if !ok {
			t.Errorf("milter/server.go requests macros at %s, unknown to this test: add it to stageSettings and to the snippets", stage)
			continue
		}
		pfList := strings.Fields(pf[set.postfix])
		for _, m := range macros {
			if !slices.Contains(pfList, m) {
				t.Errorf("postfix/main.cf.snippet: %s lacks %s, which mxguard requests at %s", set.postfix, m, stage)
			}
			if !slices.Contains(sm[set.sendmail], m) {
				t.Errorf("sendmail/mxguard.mc.snippet: %s lacks %s, which mxguard requests at %s", set.sendmail, m, stage)
			}
		}
	}
}

// TestPostfixSettings: the main.cf snippet points at mxguard's default
// address, never lets mail through when mxguard is away, and gives it more
// time than its own check deadline.
func TestPostfixSettings(t *testing.T) {
	def := policy.Default()
	pf := mainCF(t, "postfix/main.cf.snippet")
	want := map[string]string{
		"smtpd_milters":         def.Milter.Listen,
		"non_smtpd_milters":     "$smtpd_milters",
		"milter_protocol":       "6",
		"milter_default_action": "tempfail",
	}
	for k, v := range want {
		if pf[k] != v {
			t.Errorf("postfix/main.cf.snippet: %s = %q; want %q", k, pf[k], v)
		}
	}
	for _, k := range []string{"milter_command_timeout", "milter_content_timeout"} {
		d, err := time.ParseDuration(pf[k])
		if err != nil || d <= def.Milter.CheckTimeout.Duration {
			t.Errorf("postfix/main.cf.snippet: %s = %q; want more than check_timeout %v", k, pf[k], def.Milter.CheckTimeout.Duration)
		}
	}
	if !strings.Contains(pf["smtpd_relay_restrictions"], "reject_unauth_destination") {
		t.Errorf("postfix/main.cf.snippet: smtpd_relay_restrictions = %q; Postfix must refuse open relay itself as well", pf["smtpd_relay_restrictions"])
	}

	master := readFile(t, "postfix/master.cf.snippet")
	for _, w := range []string{
		"\nsubmission    inet",
		"-o smtpd_client_restrictions=permit_sasl_authenticated,reject\n  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject\n  -o milter_macro_daemon_name=submission\n",
	} {
		if !strings.Contains(master, w) {
			t.Errorf("postfix/master.cf.snippet lacks %q", w)
		}
	}
}

// TestSendmailSettings: the same for the Sendmail snippet.
func TestSendmailSettings(t *testing.T) {
	def := policy.Default()
	m := m4Filter.FindStringSubmatch(readFile(t, "sendmail/mxguard.mc.snippet"))
	if m == nil {
		t.Fatal("sendmail/mxguard.mc.snippet: no INPUT_MAIL_FILTER(`mxguard', ...)")
	}
	fields := make(map[string]string)
	for _, f := range strings.Split(m[1], ", ") {
		k, v, _ := strings.Cut(f, "=")
		fields[k] = v
	}
	// Sendmail writes inet:PORT@HOST for Postfix's inet:HOST:PORT.
	host, port, _ := strings.Cut(strings.TrimPrefix(def.Milter.Listen, "inet:"), ":")
	if want := "inet:" + port + "@" + host; fields["S"] != want {
		t.Errorf("S=%s; want %s (mxguard's default listen %s)", fields["S"], want, def.Milter.Listen)
	}
	if fields["F"] != "T" {
		t.Errorf("F=%s; want T: temp-fail while mxguard is away, never pass mail unjudged", fields["F"])
	}
	timeouts := make(map[string]time.Duration)
	for _, tm := range strings.Split(fields["T"], ";") {
		k, v, _ := strings.Cut(tm, ":")
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Errorf("T=%s: %v", fields["T"], err)
		}
		timeouts[k] = d
	}
	for _, k := range []string{"R", "E"} {
		if timeouts[k] <= def.Milter.CheckTimeout.Duration {
			t.Errorf("T=%s: %s:%v; want more than check_timeout %v", fields["T"], k, timeouts[k], def.Milter.CheckTimeout.Duration)
		}
	}
}

// TestServiceUnit: systemd waits for mxguard's own graceful shutdown, and
// runs it with the default configuration and log directory.
func TestServiceUnit(t *testing.T) {
	def := policy.Default()
	unit := make(map[string]string)
	for _, line := range strings.Split(readFile(t, "mxguard.service"), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			unit[k] = v
		}
	}
	stop, err := time.ParseDuration(unit["TimeoutStopSec"])
	if err != nil || stop <= def.Milter.ShutdownTimeout.Duration {
		t.Errorf("TimeoutStopSec=%s; want more than shutdown_timeout %v", unit["TimeoutStopSec"], def.Milter.ShutdownTimeout.Duration)
	}
	if want := " serve -config " + policy.DefaultPath; !strings.HasSuffix(unit["ExecStart"], want) {
		t.Errorf("ExecStart=%s; want ...%s", unit["ExecStart"], want)
	}
	if want := filepath.Join("/var/lib", unit["StateDirectory"]); filepath.Dir(def.Log.Path) != want {
		t.Errorf("StateDirectory=%s, but the default log is %s", unit["StateDirectory"], def.Log.Path)
	}
	if unit["KillSignal"] != "SIGTERM" {
		t.Errorf("KillSignal=%s; mxguard shuts down gracefully on SIGTERM", unit["KillSignal"])
	}
}

// requireTool returns the path of an MTA tool the tests below need. It is
// installed by scripts/install-deps.sh; a missing one fails the test unless
// MXGUARD_E2E=0, the developers' way to skip everything that needs an MTA.
func requireTool(t *testing.T, path string) string {
	t.Helper()
	if os.Getenv("MXGUARD_E2E") == "0" {
		t.Skip("MXGUARD_E2E=0: tests that need an MTA's tools are skipped")
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("%s is missing: run scripts/install-deps.sh as root (MXGUARD_E2E=0 skips this test)", path)
	}
	return path
}

// TestPostconf has Postfix itself read the snippets: postconf warns about
// parameters it does not know. It is the private copy of Debian's postfix
// the end-to-end tests use (e2e/README.md).
func TestPostconf(t *testing.T) {
	root := os.Getenv("POSTFIX_ROOT")
	if root == "" {
		root = "/var/cache/mxguard/postfix"
	}
	postconf := requireTool(t, filepath.Join(root, "usr/sbin/postconf"))
	t.Setenv("LD_LIBRARY_PATH", filepath.Join(root, "usr/lib/postfix"))
	dir := t.TempDir()
	for _, f := range [][2]string{{"postfix/main.cf.snippet", "main.cf"}, {"postfix/master.cf.snippet", "master.cf"}} {
		if err := os.WriteFile(filepath.Join(dir, f[1]), []byte(readFile(t, f[0])), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, args := range [][]string{{"-n"}, {"-M"}, {"-P"}} {
		out, err := exec.Command(postconf, append([]string{"-c", dir}, args...)...).CombinedOutput()
		if err != nil || strings.Contains(string(out), "warning") {
			t.Errorf("postconf %s: %v\n%s", args[0], err, out)
		}
	}
}

// TestSendmailM4 builds a sendmail.cf with the snippet (m4 and Debian's
// sendmail-cf, which installs beside Postfix) and checks what Sendmail will
// read.
func TestSendmailM4(t *testing.T) {
	const cfM4 = "/usr/share/sendmail/cf/m4/cf.m4"
	m4 := requireTool(t, "/usr/bin/m4")
	requireTool(t, cfM4)
	snippet, err := filepath.Abs("sendmail/mxguard.mc.snippet")
	if err != nil {
		t.Fatal(err)
	}
	mc := "divert(0)dnl\ninclude(`" + cfM4 + "')dnl\nOSTYPE(`linux')dnl\ninclude(`" + snippet + "')dnl\nMAILER(`local')dnl\nMAILER(`smtp')dnl\n"
	cmd := exec.Command(m4)
	cmd.Stdin = strings.NewReader(mc)
	cf, err := cmd.Output()
	if err != nil {
		t.Fatalf("m4: %v", err)
	}
	for _, w := range []string{
		"\nO InputMailFilters=mxguard\n",
		"\nXmxguard, S=inet:8894@127.0.0.1, F=T, T=C:30s;S:30s;R:30s;E:5m\n",
		"\nO Milter.macros.connect=j, {daemon_name}, {if_name}, {if_addr}, {client_name}, {client_ptr}, _\n",
		"\nO Milter.macros.envfrom=i, {auth_type}, {auth_authen},",
		"\nO Milter.macros.eom=i, {msg_id}\n",
	} {
		if !strings.Contains(string(cf), w) {
			t.Errorf("sendmail.cf lacks %q", w)
		}
	}
	if strings.Contains(string(cf), "mxguard: lines for") {
		t.Error("the snippet's comments reached sendmail.cf")
	}
}
