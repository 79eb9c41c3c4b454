package policy

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestExamplesParse keeps every shipped example configuration valid.
func TestExamplesParse(t *testing.T) {
	files, err := filepath.Glob("../examples/*.toml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no example configurations found: %v", err)
	}
	for _, f := range files {
		if _, err := Load(f); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}

func TestDefaultsFilled(t *testing.T) {
	cfg, err := Parse("t.toml", []byte(`hostname = "mx.test"`))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Milter.Listen != "inet:127.0.0.1:8894" || cfg.Milter.CheckTimeout.Duration != 20*time.Second ||
		cfg.SPF.Fail != Reject || cfg.SPF.SoftFail != Tag || cfg.SPF.TempError != Tempfail ||
		len(cfg.Relay.TrustedNetworks) != 2 || cfg.Log.Synchronous != "normal" {
		t.Errorf("defaults not filled: %+v", cfg)
	}
	// The effective configuration is itself a valid configuration.
	again, err := Parse("effective", []byte(cfg.Effective()))
	if err != nil {
		t.Fatalf("effective configuration does not load again: %v\n%s", err, cfg.Effective())
	}
	if again.Effective() != cfg.Effective() {
		t.Errorf("effective configuration is not stable")
	}
}

func TestOrganizationInheritsAndOverrides(t *testing.T) {
	cfg, err := Parse("t.toml", []byte(`
[spf]
softfail = "quarantine"
[[organization]]
name = "a"
domains = ["A.example."]
[organization.spf]
fail = "tag"
`))
	if err != nil {
		t.Fatal(err)
	}
	o := cfg.OrganizationFor("a.example")
	if o == nil || o.Name != "a" {
		t.Fatalf("domain lookup: got %v", o)
	}
	if o.SPF.Fail != Tag || o.SPF.SoftFail != Quarantine || o.SPF.TempError != Tempfail {
		t.Errorf("org spf = %+v; want fail=tag (own), softfail=quarantine (global), temperror=tempfail (default)", o.SPF)
	}
	if cfg.IsLocalDomain("other.example") {
		t.Error("other.example is not ours")
	}
}

func TestTrustedNetworksReplaced(t *testing.T) {
	cfg, err := Parse("t.toml", []byte("[relay]\ntrusted_networks = [\"192.0.2.0/24\", \"2001:db8::1\"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Relay.TrustedNetworks) != 2 || cfg.Relay.TrustedNetworks[1].Bits() != 128 {
		t.Errorf("trusted networks = %v; want the file's two, a bare address as /128", cfg.Relay.TrustedNetworks)
	}
}

// TestBadConfigs: each bad setting is reported with its key path and line,
// and all of them at once.
func TestBadConfigs(t *testing.T) {
	tests := []struct {
		name string
		toml string
		want []string // "line N: key: fragment"
	}{
		{"syntax", "hostname = \n", []string{"line 1"}},
		{"unknown top key", "hostnme = \"x\"\n", []string{"line 1: hostnme: unknown key"}},
		{"unknown nested key", "[milter]\nlisten = \"inet:127.0.0.1:1\"\nlistne = 1\n", []string{"line 3: milter.listne: unknown key"}},
		{"bad listen", "[milter]\nlisten = \"127.0.0.1:8894\"\n", []string{"line 2: milter.listen:", "Postfix notation"}},
		{"relative unix socket", "[milter]\nlisten = \"unix:mx.sock\"\n", []string{"line 2: milter.listen:"}},
		{"bad socket mode", "[milter]\nsocket_mode = \"rw\"\n", []string{"line 2: milter.socket_mode:"}},
		{"bad duration", "[dns]\ntimeout = \"soon\"\n", []string{"line 2: dns.timeout:", `"soon" is not a duration`}},
		{"negative duration", "[milter]\ncheck_timeout = \"-1s\"\n", []string{"line 2: milter.check_timeout: must be a positive"}},
		{"zero limit", "[milter]\nmax_sessions = 0\n", []string{"line 2: milter.max_sessions: must be at least 1"}},
		{"bad cidr", "[relay]\nblock_networks = [\n  \"192.0.2.0/24\",\n  \"300.1.1.0/24\",\n]\n", []string{"line 2: relay.block_networks:", `"300.1.1.0/24"`}},
		{"host bits", "[relay]\ntrusted_networks = [\"10.1.2.3/8\"]\n", []string{"did you mean 10.0.0.0/8"}},
		{"bad action", "[spf]\nfail = \"bounce\"\n", []string{"line 2: spf.fail: unknown action"}},
		{"bad org action", "[[organization]]\nname = \"x\"\ndomains = [\"x.test\"]\n[organization.spf]\nnone = \"drop\"\n", []string{"line 5: organization[0].spf.none: unknown action"}},
		{"bad sender pattern", "[relay.sender_login]\n\"bob\" = [\"bob\"]\n", []string{"line 2: relay.sender_login.bob:", `"bob" is neither`}},
		{"bad resolver", "[dns]\nresolver = \"dns.google\"\n", []string{"line 2: dns.resolver:"}},
		{"bad synchronous", "[log]\nsynchronous = \"off\"\n", []string{"line 2: log.synchronous:"}},
		{"bad level", "[log]\nlevel = \"loud\"\n", []string{"line 2: log.level:"}},
		{"org without name", "[[organization]]\ndomains = [\"x.test\"]\n", []string{"organization[0].name: every organisation needs a name"}},
		{"org without domains", "[[organization]]\nname = \"x\"\n", []string{"line 1: organization[0].domains: organisation \"x\" has no domains"}},
		{"bad domain", "[[organization]]\nname = \"x\"\ndomains = [\"exa mple.test\"]\n", []string{"line 3: organization[0].domains:", "not a domain"}},
		{"domain in two orgs", "[[organization]]\nname = \"a\"\ndomains = [\"x.test\"]\n[[organization]]\nname = \"b\"\ndomains = [\"X.test\"]\n",
			[]string{"line 6: organization[1].domains: domain \"x.test\" belongs to organisation \"a\" already"}},
		{"org defined twice", "[[organization]]\nname = \"a\"\ndomains = [\"x.test\"]\n[[organization]]\nname = \"a\"\ndomains = [\"y.test\"]\n",
			[]string{"line 5: organization[1].name: organisation \"a\" is defined twice"}},
		{"all at once", "bogus = 1\n[spf]\nfail = \"x\"\n[dns]\ntimeout = \"y\"\n",
			[]string{"line 1: bogus", "line 3: spf.fail", "line 5: dns.timeout"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("bad.toml", []byte(tt.toml))
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("got %v; want a *ConfigError", err)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "bad.toml:") {
				t.Errorf("error does not name the file: %s", msg)
			}
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error lacks %q:\n%s", w, msg)
				}
			}
		})
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.toml"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("got %v; want a not-exist error", err)
	}
}

func TestParseListen(t *testing.T) {
	tests := []struct{ in, network, addr string }{
		{"inet:127.0.0.1:8894", "tcp", "127.0.0.1:8894"},
		{"inet:localhost:8894", "tcp", "localhost:8894"},
		{"inet:[::1]:8894", "tcp", "[::1]:8894"},
		{"unix:/run/mxguard/mxguard.sock", "unix", "/run/mxguard/mxguard.sock"},
		{"8894", "", ""},
		{"inet:8894", "", ""},
		{"unix:relative.sock", "", ""},
	}
	for _, tt := range tests {
		n, a, err := ParseListen(tt.in)
		if n != tt.network || a != tt.addr || (err != nil) != (tt.network == "") {
			t.Errorf("ParseListen(%q) = %q, %q, %v; want %q, %q", tt.in, n, a, err, tt.network, tt.addr)
		}
	}
}

func TestDurationDays(t *testing.T) {
	var d Duration
	_ = d.UnmarshalText([]byte("90d"))
	if d.err != nil || d.Duration != 90*24*time.Hour || d.String() != "90d" {
		t.Errorf("90d parsed as %v (%v), prints %q", d.Duration, d.err, d.String())
	}
}

// TestEveryKeyDocumented keeps docs/config.md a reference for every key.
func TestEveryKeyDocumented(t *testing.T) {
	doc, err := os.ReadFile("../docs/config.md")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := Parse("t", []byte("[[organization]]\nname = \"x\"\ndomains = [\"x.test\"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	table := ""
	for _, line := range strings.Split(cfg.Effective(), "\n") {
		line = strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, "["):
			table = strings.Trim(line, "[]")
			if !strings.Contains(string(doc), "`"+line+"`") {
				t.Errorf("docs/config.md has no section `%s`", line)
			}
		case strings.Contains(line, "="):
			key := strings.TrimSpace(strings.SplitN(line, "=", 2)[0])
			if !strings.Contains(string(doc), "| `"+key+"` |") {
				t.Errorf("docs/config.md does not document %s.%s", table, key)
			}
		}
	}
}

func TestRetention(t *testing.T) {
	cfg, err := Parse("t", []byte(`[log]
retention = "30d"
[[organization]]
name = "keeper"
domains = ["keeper.test"]
[organization.log]
retention = "365d"
[[organization]]
name = "plain"
domains = ["plain.test"]
`))
	if err != nil {
		t.Fatal(err)
	}
	byOrg, others := cfg.Retention()
	if others != 30*24*time.Hour || len(byOrg) != 1 || byOrg["keeper"] != 365*24*time.Hour {
		t.Errorf("retention: orgs %v, others %v", byOrg, others)
	}
	if _, err := Parse("t", []byte("[[organization]]\nname = \"x\"\ndomains = [\"x.test\"]\n[organization.log]\nretention = \"forever\"\n")); err == nil ||
		!strings.Contains(err.Error(), "line 5: organization[0].log.retention") {
		t.Errorf("bad org retention: %v", err)
	}
}
