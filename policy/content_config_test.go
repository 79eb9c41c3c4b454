package policy

import (
	"strings"
	"testing"
)

const contentConfig = `
[virus]
engine = "clamd"
address = "inet:127.0.0.1:3310"
max_size = "10MB"
[spam]
engine = "rspamd"
tag_score = 4.0
subject_tag = "[SPAM]"
[attachments]
block_extensions = [".EXE", "js"]
block_types = ["application/x-dosexec", "elf"]
[senders]
safe = ["@partner.test"]
blocked = ["spammer@bad.test", "198.51.100.0/24"]
[[organization]]
name = "strict"
domains = ["strict.test"]
[organization.spam]
quarantine_score = 6.0
reject_score = 8.0
subject_tag = "***"
[organization.virus]
action = "quarantine"
[organization.attachments]
block_extensions = []
[organization.senders]
blocked = ["@partner.test"]
[[organization.user]]
address = "ceo@strict.test"
safe = ["@partner.test", "@board.test"]
blocked = ["@board.test"]
[[organization]]
name = "plain"
domains = ["plain.test"]
`

func TestContentConfig(t *testing.T) {
	cfg, err := Parse("t", []byte(contentConfig))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Spam.Address != "http://127.0.0.1:11333" {
		t.Errorf("rspamd default address: %q", cfg.Spam.Address)
	}
	if cfg.Virus.MaxSize.Bytes != 10<<20 {
		t.Errorf("max_size: %d", cfg.Virus.MaxSize.Bytes)
	}
	if got := strings.Join(cfg.Attachments.BlockTypes, ","); got != "pe,elf" {
		t.Errorf("types normalised to %q", got)
	}
	if got := strings.Join(cfg.Attachments.BlockExtensions, ","); got != "exe,js" {
		t.Errorf("extensions normalised to %q", got)
	}
	strict, plain := &cfg.Organizations[0].content, &cfg.Organizations[1].content
	if strict.spam != (SpamThresholds{TagScore: 4, QuarantineScore: 6, RejectScore: 8}) || plain.spam != (SpamThresholds{TagScore: 4, QuarantineScore: 10, RejectScore: 15}) {
		t.Errorf("thresholds: strict %+v plain %+v", strict.spam, plain.spam)
	}
	if strict.virusAction != Quarantine || plain.virusAction != Reject {
		t.Errorf("virus actions: strict %v plain %v", strict.virusAction, plain.virusAction)
	}
	if len(strict.blockExtensions) != 0 || len(plain.blockExtensions) != 2 {
		t.Errorf("extensions: strict %v plain %v", strict.blockExtensions, plain.blockExtensions)
	}
	if strict.subjectTag != "***" || plain.subjectTag != "[SPAM]" {
		t.Errorf("subject tags: %q %q", strict.subjectTag, plain.subjectTag)
	}
	// Effective output parses again to the same settings.
	again, err := Parse("effective", []byte(cfg.Effective()))
	if err != nil {
		t.Fatalf("effective config does not parse: %v\n%s", err, cfg.Effective())
	}
	if again.Virus.MaxSize != cfg.Virus.MaxSize || again.Organizations[0].content.virusAction != Quarantine {
		t.Errorf("effective config lost settings")
	}
}

func TestContentConfigErrors(t *testing.T) {
	tests := []struct{ name, toml, want string }{
		{"engine", "[virus]\nengine = \"sophos\"\n", `line 2: virus.engine: must be "clamd" or "none"`},
		{"clamd address", "[virus]\nengine = \"clamd\"\naddress = \"/run/clamd.ctl\"\n", "line 3: virus.address:"},
		{"rspamd address", "[spam]\nengine = \"rspamd\"\naddress = \"inet:127.0.0.1:11333\"\n", "line 3: spam.address: rspamd's address is its HTTP URL"},
		{"size", "[virus]\nmax_size = \"big\"\n", `line 2: virus.max_size: "big" is not a size`},
		{"on_error", "[spam]\non_error = \"reject\"\n", `line 2: spam.on_error: must be "tempfail" or "accept"`},
		{"timeout beyond budget", "[virus]\ntimeout = \"10m\"\n", "line 2: virus.timeout: 10m0s is longer than milter.content_timeout"},
		{"decreasing steps", "[spam]\ntag_score = 9.0\nquarantine_score = 5.0\n", "line 3: spam.quarantine_score: 5 is below tag_score (9)"},
		{"negative score", "[spam]\nreject_score = -1.0\n", "line 2: spam.reject_score: must be 0 (off)"},
		{"org steps", "[[organization]]\nname = \"a\"\ndomains = [\"a.test\"]\n[organization.spam]\nreject_score = 3.0\n", "organization[0].spam.reject_score: 3 is below"},
		{"extension", "[attachments]\nblock_extensions = [\"tar.gz\"]\n", `line 2: attachments.block_extensions: "tar.gz" is not a file extension`},
		{"type", "[attachments]\nblock_types = [\"application/x-nonsense\"]\n", `line 2: attachments.block_types: "application/x-nonsense" is not a type mxguard detects`},
		{"sender entry", "[senders]\nsafe = [\"partner.test\"]\n", `line 2: senders.safe: "partner.test" is not an address`},
		{"org engine key", "[[organization]]\nname = \"a\"\ndomains = [\"a.test\"]\n[organization.spam]\nengine = \"spamd\"\n", "line 5: organization.spam.engine: unknown key"},
		{"user outside org", "[[organization]]\nname = \"a\"\ndomains = [\"a.test\"]\n[[organization.user]]\naddress = \"x@b.test\"\n", `line 5: organization[0].user[0].address: "x@b.test" is not in the organisation's domains`},
		{"virus action", "[virus]\naction = \"bounce\"\n", "line 2: virus.action: unknown action"},
		{"subject tag", "[spam]\nsubject_tag = \"a\\nb\"\n", "line 2: spam.subject_tag: must be one line"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("bad.toml", []byte(tt.toml))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v\nwant it to contain %q", err, tt.want)
			}
		})
	}
}

func TestSize(t *testing.T) {
	for in, want := range map[string]int64{"25MB": 25 << 20, "512KB": 512 << 10, "1GB": 1 << 30, "2M": 2 << 20, "100": 100, "3 MiB": 3 << 20} {
		got, err := parseSize(in)
		if err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "MB", "-1", "1TB", "1.5MB"} {
		if _, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q) accepted", in)
		}
	}
	if _, err := Parse("t", []byte("[virus]\nmax_size = 1048576\n")); err != nil {
		t.Errorf("a bare byte count: %v", err)
	}
}
