package policy

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/mxguard/mxguard/scanners/dkim"
)

// DefaultPath is where mxguard looks for its configuration by default.
const DefaultPath = "/etc/mxguard/mxguard.toml"

// Config is mxguard's whole configuration. Defaults live in Default; a file
// is decoded over them and then validated all at once. The documentation of
// every key is in docs/config.md.
type Config struct {
	Hostname      string           `toml:"hostname"`
	Milter        MilterConfig     `toml:"milter"`
	Log           LogConfig        `toml:"log"`
	DNS           DNSConfig        `toml:"dns"`
	Relay         RelayConfig      `toml:"relay"`
	SPF           SPFActions       `toml:"spf"`
	Virus         VirusConfig      `toml:"virus"`
	Spam          SpamConfig       `toml:"spam"`
	Attachments   AttachmentConfig `toml:"attachments"`
	Senders       SenderLists      `toml:"senders"`
	DKIM          DKIMConfig       `toml:"dkim"`
	DMARC         DMARCConfig      `toml:"dmarc"`
	Web           WebConfig        `toml:"web"`
	Organizations []Organization   `toml:"organization"`

	// byDomain maps each of our domains (lower case) to its organisation.
	byDomain map[string]*Organization
	// content is the global content policy, resolved by validation.
	content contentPolicy
	// signingKeys are the loaded [[dkim.key]]s by domain.
	signingKeys map[string]*dkim.Key
}

// MilterConfig is the [milter] section: where mxguard listens and its limits.
type MilterConfig struct {
	Listen          string   `toml:"listen"`
	SocketMode      string   `toml:"socket_mode"`
	SocketGroup     string   `toml:"socket_group"`
	MaxSessions     int      `toml:"max_sessions"`
	MaxRecipients   int      `toml:"max_recipients"`
	MaxHeaders      int      `toml:"max_headers"`
	MaxHeaderBytes  int      `toml:"max_header_bytes"`
	CheckTimeout    Duration `toml:"check_timeout"`
	ContentTimeout  Duration `toml:"content_timeout"`
	ShutdownTimeout Duration `toml:"shutdown_timeout"`
	BodyMemory      Size     `toml:"body_memory"`
	SpoolDir        string   `toml:"spool_dir"`
}

// LogConfig is the [log] section: the transaction log and the debug log.
type LogConfig struct {
	Path        string   `toml:"path"`
	Synchronous string   `toml:"synchronous"`
	Level       string   `toml:"level"`
	Retention   Duration `toml:"retention"`
}

// OrgLogConfig is an organisation's [organization.log]: how long its
// transactions are kept, when that differs from [log] retention.
type OrgLogConfig struct {
	Retention Duration `toml:"retention,omitempty"`
}

// DNSConfig is the [dns] section.
type DNSConfig struct {
	Resolver  string   `toml:"resolver"`
	Timeout   Duration `toml:"timeout"`
	CacheSize int      `toml:"cache_size"`
}

// RelayConfig is the [relay] section: who may relay, who is refused outright,
// and which envelope senders each authenticated user may use.
type RelayConfig struct {
	TrustedNetworks []Network           `toml:"trusted_networks"`
	BlockNetworks   []Network           `toml:"block_networks"`
	SenderLogin     map[string][]string `toml:"sender_login"`
}

// SPFActions maps each SPF result (RFC 7208 section 2.6) to an action.
// In an organisation, a result left out inherits the global action.
type SPFActions struct {
	Pass      Action `toml:"pass,omitempty"`
	Fail      Action `toml:"fail,omitempty"`
	SoftFail  Action `toml:"softfail,omitempty"`
	Neutral   Action `toml:"neutral,omitempty"`
	None      Action `toml:"none,omitempty"`
	TempError Action `toml:"temperror,omitempty"`
	PermError Action `toml:"permerror,omitempty"`
}

// Organization is one customer of the gateway: its domains and the settings
// in which its policy differs from the global one.
type Organization struct {
	Name        string         `toml:"name"`
	Domains     []string       `toml:"domains"`
	SPF         SPFActions     `toml:"spf"`
	Log         OrgLogConfig   `toml:"log"`
	Spam        OrgSpam        `toml:"spam"`
	Virus       OrgVirus       `toml:"virus"`
	Attachments OrgAttachments `toml:"attachments"`
	Senders     SenderLists    `toml:"senders"`
	Users       []UserLists    `toml:"user"`
	DMARC       OrgDMARC       `toml:"dmarc"`

	content contentPolicy         // effective, resolved by validation
	users   map[string]senderList // by lower-cased recipient address
	dmarc   DMARCConfig           // effective
}

// Default returns the configuration used where the file says nothing.
func Default() *Config {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "localhost"
	}
	c := &Config{
		Hostname: host,
		Milter: MilterConfig{
			Listen:          "inet:127.0.0.1:8894",
			SocketMode:      "0660",
			MaxSessions:     500,
			MaxRecipients:   1000,
			MaxHeaders:      1000,
			MaxHeaderBytes:  1 << 20,
			CheckTimeout:    Duration{Duration: 20 * time.Second},
			ShutdownTimeout: Duration{Duration: 30 * time.Second},
		},
		Log: LogConfig{
			Path:        "/var/lib/mxguard/mxguard.db",
			Synchronous: "normal",
			Level:       "info",
			Retention:   Duration{Duration: 90 * 24 * time.Hour},
		},
		DNS: DNSConfig{
			Timeout:   Duration{Duration: 5 * time.Second},
			CacheSize: 10000,
		},
		Relay: RelayConfig{
			TrustedNetworks: []Network{mustNetwork("127.0.0.0/8"), mustNetwork("::1/128")},
			BlockNetworks:   []Network{},
			SenderLogin:     map[string][]string{},
		},
		SPF: SPFActions{
			Pass:      Accept,
			Fail:      Reject,
			SoftFail:  Tag,
			Neutral:   Accept,
			None:      Accept,
			TempError: Tempfail,
			PermError: Tag,
		},
	}
	contentDefaults(c)
	authDefaults(c)
	c.Web = WebConfig{
		DB:             "/var/lib/mxguard/web.db",
		TrustedProxies: []Network{},
		SessionIdle:    Duration{Duration: 30 * time.Minute},
		SessionMax:     Duration{Duration: 12 * time.Hour},
		LoginAttempts:  5,
		LoginLockout:   Duration{Duration: 15 * time.Minute},
	}
	return c
}

// ConfigError lists every problem found in a configuration file.
type ConfigError struct {
	Path     string
	Problems []Problem
}

// Problem is one invalid setting: its key path, line (0 when unknown) and what is wrong.
type Problem struct {
	Key  string
	Line int
	Msg  string
}

func (p Problem) String() string {
	if p.Line > 0 {
		return fmt.Sprintf("line %d: %s: %s", p.Line, p.Key, p.Msg)
	}
	if p.Key == "" {
		return p.Msg
	}
	return fmt.Sprintf("%s: %s", p.Key, p.Msg)
}

func (e *ConfigError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %d problem(s):", e.Path, len(e.Problems))
	for _, p := range e.Problems {
		b.WriteString("\n  ")
		b.WriteString(p.String())
	}
	return b.String()
}

// Load reads, decodes and validates the configuration file at path.
// A *ConfigError lists every problem at once.
func Load(path string) (*Config, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading configuration: %w", err)
	}
	return Parse(path, src)
}

// Parse decodes and validates a configuration; name is used in messages.
func Parse(name string, src []byte) (*Config, error) {
	cfg := Default()
	// The defaults are replaced, not merged, by lists in the file.
	cfg.Relay.TrustedNetworks = nil
	cfg.Attachments.BlockExtensions, cfg.Attachments.BlockTypes = nil, nil
	md, err := toml.NewDecoder(bytes.NewReader(src)).Decode(cfg)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return nil, &ConfigError{Path: name, Problems: []Problem{{Key: pe.LastKey, Line: pe.Position.Line, Msg: pe.Message}}}
		}
		return nil, &ConfigError{Path: name, Problems: []Problem{{Msg: err.Error()}}}
	}
	if !md.IsDefined("relay", "trusted_networks") {
		cfg.Relay.TrustedNetworks = Default().Relay.TrustedNetworks
	}
	if !md.IsDefined("attachments", "block_extensions") {
		cfg.Attachments.BlockExtensions = defaultBlockedExtensions()
	}
	if !md.IsDefined("attachments", "block_types") {
		cfg.Attachments.BlockTypes = defaultBlockedTypes()
	}
	if cfg.Spam.Address == "" {
		cfg.Spam.Address = spamAddressDefault(cfg.Spam.Engine)
	}

	lines := keyLines(src)
	var problems []Problem
	for _, k := range md.Undecoded() {
		problems = append(problems, Problem{Key: k.String(), Line: lines.find(k.String()), Msg: "unknown key"})
	}
	for _, p := range cfg.validate() {
		p.Line = lines.find(p.Key)
		problems = append(problems, p)
	}
	if len(problems) > 0 {
		sort.SliceStable(problems, func(i, j int) bool { return problems[i].Line < problems[j].Line })
		return nil, &ConfigError{Path: name, Problems: problems}
	}
	return cfg, nil
}

// validate checks every setting, fills organisation settings that inherit
// global ones, and builds the domain index. It returns every problem found.
func (c *Config) validate() []Problem {
	var ps []Problem
	bad := func(key, format string, args ...any) {
		ps = append(ps, Problem{Key: key, Msg: fmt.Sprintf(format, args...)})
	}

	if c.Hostname == "" || strings.ContainsAny(c.Hostname, " \t;") {
		bad("hostname", "must be a host name (it is the authserv-id of Authentication-Results)")
	}

	if _, _, err := ParseListen(c.Milter.Listen); err != nil {
		bad("milter.listen", "%v", err)
	}
	if m, err := strconv.ParseUint(c.Milter.SocketMode, 8, 32); err != nil || m > 0o777 {
		bad("milter.socket_mode", "must be an octal file mode such as \"0660\", not %q", c.Milter.SocketMode)
	}
	for key, v := range map[string]int{
		"milter.max_sessions":     c.Milter.MaxSessions,
		"milter.max_recipients":   c.Milter.MaxRecipients,
		"milter.max_headers":      c.Milter.MaxHeaders,
		"milter.max_header_bytes": c.Milter.MaxHeaderBytes,
		"dns.cache_size":          c.DNS.CacheSize,
	} {
		if v < 1 {
			bad(key, "must be at least 1, not %d", v)
		}
	}
	for key, d := range map[string]Duration{
		"milter.check_timeout":    c.Milter.CheckTimeout,
		"milter.shutdown_timeout": c.Milter.ShutdownTimeout,
		"dns.timeout":             c.DNS.Timeout,
		"log.retention":           c.Log.Retention,
	} {
		if d.err != nil {
			bad(key, "%v", d.err)
		} else if d.Duration <= 0 {
			bad(key, "must be a positive duration such as \"5s\"")
		}
	}

	if c.Log.Path == "" {
		bad("log.path", "must name the SQLite file of the transaction log")
	} else if abs, err := filepath.Abs(c.Log.Path); err == nil {
		c.Log.Path = abs
	}
	if c.Log.Synchronous != "normal" && c.Log.Synchronous != "full" {
		bad("log.synchronous", "must be \"normal\" or \"full\", not %q", c.Log.Synchronous)
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level", "must be debug, info, warn or error, not %q", c.Log.Level)
	}

	if c.DNS.Resolver != "" {
		if _, err := netip.ParseAddrPort(c.DNS.Resolver); err != nil {
			if _, err := netip.ParseAddr(c.DNS.Resolver); err != nil {
				bad("dns.resolver", "must be \"\" (system resolver), an IP address or IP:port, not %q", c.DNS.Resolver)
			}
		}
	}

	for _, list := range []struct {
		key  string
		nets []Network
	}{{"relay.trusted_networks", c.Relay.TrustedNetworks}, {"relay.block_networks", c.Relay.BlockNetworks}} {
		for _, n := range list.nets {
			if n.err != nil {
				bad(list.key, "%v", n.err)
			}
		}
	}
	for user, senders := range c.Relay.SenderLogin {
		key := "relay.sender_login." + quoteKey(user)
		if user == "" {
			bad(key, "the user name must not be empty")
		}
		for _, s := range senders {
			if !validSenderPattern(s) {
				bad(key, "%q is neither an address (user@domain) nor \"@domain\"", s)
			}
		}
	}

	ps = append(ps, c.SPF.validate("spf", false)...)
	c.validateContent(bad)
	c.validateAuth(bad)
	c.validateWeb(bad)

	c.byDomain = map[string]*Organization{}
	names := map[string]bool{}
	for i := range c.Organizations {
		o := &c.Organizations[i]
		key := fmt.Sprintf("organization[%d]", i)
		switch {
		case o.Name == "":
			bad(key+".name", "every organisation needs a name")
		case names[o.Name]:
			bad(key+".name", "organisation %q is defined twice", o.Name)
		}
		names[o.Name] = true
		if len(o.Domains) == 0 {
			bad(key+".domains", "organisation %q has no domains", o.Name)
		}
		for j, d := range o.Domains {
			d = strings.ToLower(strings.TrimSuffix(d, "."))
			o.Domains[j] = d
			if !validDomain(d) {
				bad(key+".domains", "%q is not a domain name", d)
				continue
			}
			if other, dup := c.byDomain[d]; dup {
				bad(key+".domains", "domain %q belongs to organisation %q already", d, other.Name)
				continue
			}
			c.byDomain[d] = o
		}
		ps = append(ps, o.SPF.validate(key+".spf", true)...)
		o.SPF.inherit(c.SPF)
		switch r := o.Log.Retention; {
		case r.err != nil:
			bad(key+".log.retention", "%v", r.err)
		case r.Duration < 0:
			bad(key+".log.retention", "must be a positive duration such as \"30d\"")
		case r.Duration == 0:
			o.Log.Retention = c.Log.Retention
		}
	}
	// Users are checked against every organisation's domains, so after all are indexed.
	for i := range c.Organizations {
		c.validateOrgContent(&c.Organizations[i], fmt.Sprintf("organization[%d]", i), bad)
		c.validateOrgAuth(&c.Organizations[i], fmt.Sprintf("organization[%d]", i), bad)
	}
	return ps
}

func (s SPFActions) validate(key string, partial bool) []Problem {
	var ps []Problem
	for _, f := range s.fields() {
		switch {
		case *f.action == invalid:
			ps = append(ps, Problem{Key: key + "." + f.name, Msg: "unknown action (want accept, tag, quarantine, tempfail, reject or discard)"})
		case *f.action == unset && !partial:
			ps = append(ps, Problem{Key: key + "." + f.name, Msg: "an action is required"})
		}
	}
	return ps
}

func (s *SPFActions) inherit(global SPFActions) {
	g := global.fields()
	for i, f := range s.fields() {
		if *f.action == unset {
			*f.action = *g[i].action
		}
	}
}

type spfField struct {
	name   string
	action *Action
}

func (s *SPFActions) fields() []spfField {
	return []spfField{
		{"pass", &s.Pass}, {"fail", &s.Fail}, {"softfail", &s.SoftFail}, {"neutral", &s.Neutral},
		{"none", &s.None}, {"temperror", &s.TempError}, {"permerror", &s.PermError},
	}
}

// Retention returns how long transactions are kept: per organisation name
// (with organisations that do not override it absent) and for everything
// else (transactions of no organisation, or of an organisation no longer
// configured).
func (c *Config) Retention() (byOrg map[string]time.Duration, others time.Duration) {
	byOrg = map[string]time.Duration{}
	for _, o := range c.Organizations {
		if o.Log.Retention != c.Log.Retention {
			byOrg[o.Name] = o.Log.Retention.Duration
		}
	}
	return byOrg, c.Log.Retention.Duration
}

// OrganizationFor returns the organisation that owns domain, or nil when the
// domain is not one of ours.
func (c *Config) OrganizationFor(domain string) *Organization {
	return c.byDomain[strings.ToLower(strings.TrimSuffix(domain, "."))]
}

// IsLocalDomain reports whether mxguard accepts mail for domain.
func (c *Config) IsLocalDomain(domain string) bool { return c.OrganizationFor(domain) != nil }

// Effective renders the configuration with every default filled in, as
// TOML that Load accepts again.
func (c *Config) Effective() string {
	var b bytes.Buffer
	enc := toml.NewEncoder(&b)
	enc.Indent = ""
	if err := enc.Encode(c); err != nil {
		return "# cannot render configuration: " + err.Error()
	}
	return b.String()
}

// ParseListen splits a listen address in Postfix notation, "inet:host:port"
// or "unix:/path", into a Go network and address.
func ParseListen(s string) (network, address string, err error) {
	kind, rest, ok := strings.Cut(s, ":")
	switch {
	case ok && kind == "inet":
		if _, err := netip.ParseAddrPort(rest); err != nil {
			host, port, found := strings.Cut(rest, ":")
			if !found || host == "" || port == "" {
				return "", "", fmt.Errorf("%q: want inet:host:port, e.g. inet:127.0.0.1:8894", s)
			}
		}
		return "tcp", rest, nil
	case ok && kind == "inet6":
		return "tcp6", rest, nil
	case ok && kind == "unix" && strings.HasPrefix(rest, "/"):
		return "unix", rest, nil
	}
	return "", "", fmt.Errorf("%q: want \"inet:host:port\" or \"unix:/absolute/path\" (Postfix notation)", s)
}

// Duration is a time.Duration written as text ("5s", "2h", "90d").
// UnmarshalText never fails; validation reports a bad value with its line.
type Duration struct {
	time.Duration
	err error
}

func (d *Duration) UnmarshalText(b []byte) error {
	d.Duration, d.err = parseDuration(string(b))
	return nil
}

func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

func (d Duration) String() string {
	if d.Duration >= 24*time.Hour && d.Duration%(24*time.Hour) == 0 {
		return fmt.Sprintf("%dd", d.Duration/(24*time.Hour))
	}
	return d.Duration.String()
}

// parseDuration is time.ParseDuration plus a "d" (day) unit for retention-like settings.
func parseDuration(s string) (time.Duration, error) {
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(days)
		if err == nil && n >= 0 {
			return time.Duration(n) * 24 * time.Hour, nil
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration (e.g. \"30s\", \"5m\", \"2h\", \"90d\")", s)
	}
	return d, nil
}

// Network is an IP network in CIDR notation; a bare address means a single host.
type Network struct {
	netip.Prefix
	err error
}

func (n *Network) UnmarshalText(b []byte) error {
	n.Prefix, n.err = parseNetwork(string(b))
	return nil
}

func (n Network) MarshalText() ([]byte, error) { return []byte(n.Prefix.String()), nil }

func parseNetwork(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		if p != p.Masked() {
			return netip.Prefix{}, fmt.Errorf("%q has host bits set (did you mean %s?)", s, p.Masked())
		}
		return p, nil
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	return netip.Prefix{}, fmt.Errorf("%q is not an IP network (e.g. \"192.0.2.0/24\", \"2001:db8::/32\")", s)
}

func mustNetwork(s string) Network {
	p, err := parseNetwork(s)
	if err != nil {
		panic(err)
	}
	return Network{Prefix: p}
}

// containsAddr reports whether any of nets contains a.
func containsAddr(nets []Network, a netip.Addr) bool {
	a = a.Unmap()
	for _, n := range nets {
		if n.Contains(a) {
			return true
		}
	}
	return false
}

func validDomain(d string) bool {
	if d == "" || len(d) > 253 || strings.HasPrefix(d, ".") || strings.Contains(d, "..") {
		return false
	}
	for _, r := range d {
		if !(r == '.' || r == '-' || r == '_' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r > 127) {
			return false
		}
	}
	return true
}

func validSenderPattern(s string) bool {
	local, domain, ok := strings.Cut(s, "@")
	if !ok || strings.Contains(domain, "@") {
		return false
	}
	_ = local // "" means "@domain": any address of the domain
	return validDomain(strings.ToLower(domain))
}

func quoteKey(k string) string {
	for _, r := range k {
		if !(r == '_' || r == '-' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			return strconv.Quote(k)
		}
	}
	return k
}
