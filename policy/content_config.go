package policy

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// VirusConfig is the [virus] section: the virus engine and what an infected
// message gets.
type VirusConfig struct {
	Engine  string   `toml:"engine"`  // "clamd" or "none"
	Address string   `toml:"address"` // Postfix notation: "unix:/path" or "inet:host:port"
	Timeout Duration `toml:"timeout"`
	MaxSize Size     `toml:"max_size"`
	OnError Action   `toml:"on_error"` // engine down, timed out or answering garbage
	Action  Action   `toml:"action"`   // for an infected message
}

// SpamConfig is the [spam] section: the spam engine and the score
// thresholds for inbound mail; [spam.outbound] holds those for our users'.
type SpamConfig struct {
	Engine   string   `toml:"engine"`  // "spamd", "rspamd" or "none"
	Address  string   `toml:"address"` // spamd: "inet:host:port" or "unix:/path"; rspamd: "http://host:port"
	Password string   `toml:"password,omitempty"`
	Timeout  Duration `toml:"timeout"`
	MaxSize  Size     `toml:"max_size"`
	OnError  Action   `toml:"on_error"`
	SpamThresholds
	SubjectTag string         `toml:"subject_tag"`
	User       string         `toml:"user,omitempty"` // spamd's per-user preferences
	Outbound   SpamThresholds `toml:"outbound"`
}

// SpamThresholds are the scores from which a message is tagged, quarantined
// or rejected. A threshold of 0 turns its step off.
type SpamThresholds struct {
	TagScore        float64 `toml:"tag_score"`
	QuarantineScore float64 `toml:"quarantine_score"`
	RejectScore     float64 `toml:"reject_score"`
}

// AttachmentConfig is the [attachments] section.
type AttachmentConfig struct {
	BlockExtensions []string `toml:"block_extensions"`
	BlockTypes      []string `toml:"block_types"`
	Action          Action   `toml:"action"`
}

// SenderLists is a [senders] table (global or an organisation's): envelope
// senders and client networks whose mail skips the spam verdict (safe) or
// is refused (blocked).
type SenderLists struct {
	Safe    []string `toml:"safe"`
	Blocked []string `toml:"blocked"`
}

// UserLists are one recipient's own safe and blocked senders ([[organization.user]]).
type UserLists struct {
	Address string   `toml:"address"`
	Safe    []string `toml:"safe"`
	Blocked []string `toml:"blocked"`
}

// OrgSpam is [organization.spam]: what an organisation may change of the
// spam policy. Unset keys inherit [spam].
type OrgSpam struct {
	TagScore        *float64 `toml:"tag_score,omitempty"`
	QuarantineScore *float64 `toml:"quarantine_score,omitempty"`
	RejectScore     *float64 `toml:"reject_score,omitempty"`
	SubjectTag      *string  `toml:"subject_tag,omitempty"`
	User            string   `toml:"user,omitempty"`
}

// OrgVirus is [organization.virus].
type OrgVirus struct {
	Action Action `toml:"action,omitempty"`
}

// OrgAttachments is [organization.attachments]; a list set here replaces
// the global one.
type OrgAttachments struct {
	BlockExtensions []string `toml:"block_extensions,omitempty"`
	BlockTypes      []string `toml:"block_types,omitempty"`
	Action          Action   `toml:"action,omitempty"`
}

// contentPolicy is the effective content policy of the global
// configuration or of one organisation, with inheritance resolved.
type contentPolicy struct {
	virusAction      Action
	spam             SpamThresholds
	subjectTag       string
	spamdUser        string
	blockExtensions  []string
	blockTypes       []string
	attachmentAction Action
	senders          senderList // this level's own lists only
}

// senderList is a parsed safe/blocked pair.
type senderList struct {
	safe, blocked senderSet
}

// senderSet matches an envelope sender or client address: exact
// addresses, "@domain" (that domain only, not its subdomains) and networks.
type senderSet struct {
	addrs   map[string]bool
	domains map[string]bool
	nets    []netip.Prefix
}

func (s senderSet) empty() bool { return len(s.addrs) == 0 && len(s.domains) == 0 && len(s.nets) == 0 }

func (s senderSet) matches(sender string, ip netip.Addr) (string, bool) {
	if sender != "" {
		if s.addrs[strings.ToLower(sender)] {
			return sender, true
		}
		if d := domainOf(sender); s.domains[d] {
			return "@" + d, true
		}
	}
	if ip.IsValid() {
		for _, n := range s.nets {
			if n.Contains(ip.Unmap()) {
				return n.String(), true
			}
		}
	}
	return "", false
}

// parseSenderSet parses list entries, reporting each bad one under key.
func parseSenderSet(key string, entries []string, bad func(key, format string, args ...any)) senderSet {
	s := senderSet{addrs: map[string]bool{}, domains: map[string]bool{}}
	for _, e := range entries {
		e = strings.TrimSpace(e)
		switch {
		case strings.Contains(e, "@"):
			if !validSenderPattern(e) {
				bad(key, "%q is not an address (user@domain) or \"@domain\"", e)
				continue
			}
			if strings.HasPrefix(e, "@") {
				s.domains[strings.ToLower(strings.TrimSuffix(e[1:], "."))] = true
			} else {
				s.addrs[strings.ToLower(e)] = true
			}
		default:
			p, err := parseNetwork(e)
			if err != nil {
				bad(key, "%q is not an address, \"@domain\" or IP network", e)
				continue
			}
			s.nets = append(s.nets, p)
		}
	}
	return s
}

// validateContent checks [virus], [spam], [attachments] and [senders] and
// resolves the global content policy.
func (c *Config) validateContent(bad func(key, format string, args ...any)) {
	switch c.Virus.Engine {
	case "none":
	case "clamd":
		if _, _, err := ParseListen(c.Virus.Address); err != nil {
			bad("virus.address", "%v", err)
		}
	default:
		bad("virus.engine", "must be \"clamd\" or \"none\", not %q", c.Virus.Engine)
	}
	switch c.Spam.Engine {
	case "none":
	case "spamd":
		if _, _, err := ParseListen(c.Spam.Address); err != nil {
			bad("spam.address", "%v", err)
		}
	case "rspamd":
		if !strings.HasPrefix(c.Spam.Address, "http://") && !strings.HasPrefix(c.Spam.Address, "https://") {
			bad("spam.address", "rspamd's address is its HTTP URL, e.g. \"http://127.0.0.1:11333\", not %q", c.Spam.Address)
		}
	default:
		bad("spam.engine", "must be \"spamd\", \"rspamd\" or \"none\", not %q", c.Spam.Engine)
	}
	for key, d := range map[string]Duration{"virus.timeout": c.Virus.Timeout, "spam.timeout": c.Spam.Timeout, "milter.content_timeout": c.Milter.ContentTimeout} {
		switch {
		case d.err != nil:
			bad(key, "%v", d.err)
		case d.Duration <= 0:
			bad(key, "must be a positive duration such as \"30s\"")
		case key != "milter.content_timeout" && d.Duration > c.Milter.ContentTimeout.Duration:
			bad(key, "%s is longer than milter.content_timeout (%s), which bounds all end-of-message checks", d, c.Milter.ContentTimeout)
		}
	}
	for key, s := range map[string]Size{"virus.max_size": c.Virus.MaxSize, "spam.max_size": c.Spam.MaxSize, "milter.body_memory": c.Milter.BodyMemory} {
		if s.err != nil {
			bad(key, "%v", s.err)
		}
	}
	for key, a := range map[string]Action{"virus.on_error": c.Virus.OnError, "spam.on_error": c.Spam.OnError} {
		if a != Tempfail && a != Accept {
			bad(key, "must be \"tempfail\" or \"accept\", not %q", a)
		}
	}
	checkAction(bad, "virus.action", c.Virus.Action, false)
	checkAction(bad, "attachments.action", c.Attachments.Action, false)
	checkThresholds(bad, "spam", c.Spam.SpamThresholds)
	checkThresholds(bad, "spam.outbound", c.Spam.Outbound)
	checkSubjectTag(bad, "spam.subject_tag", c.Spam.SubjectTag)
	c.Attachments.BlockExtensions = checkExtensions(bad, "attachments.block_extensions", c.Attachments.BlockExtensions)
	c.Attachments.BlockTypes = checkTypes(bad, "attachments.block_types", c.Attachments.BlockTypes)

	c.content = contentPolicy{
		virusAction:      c.Virus.Action,
		spam:             c.Spam.SpamThresholds,
		subjectTag:       c.Spam.SubjectTag,
		spamdUser:        c.Spam.User,
		blockExtensions:  c.Attachments.BlockExtensions,
		blockTypes:       c.Attachments.BlockTypes,
		attachmentAction: c.Attachments.Action,
		senders: senderList{
			safe:    parseSenderSet("senders.safe", c.Senders.Safe, bad),
			blocked: parseSenderSet("senders.blocked", c.Senders.Blocked, bad),
		},
	}
}

// validateOrgContent checks an organisation's content overrides and
// resolves its effective content policy from the global one.
func (c *Config) validateOrgContent(o *Organization, key string, bad func(key, format string, args ...any)) {
	p := c.content
	p.senders = senderList{
		safe:    parseSenderSet(key+".senders.safe", o.Senders.Safe, bad),
		blocked: parseSenderSet(key+".senders.blocked", o.Senders.Blocked, bad),
	}
	if o.Virus.Action != unset {
		checkAction(bad, key+".virus.action", o.Virus.Action, false)
		p.virusAction = o.Virus.Action
	}
	if o.Attachments.Action != unset {
		checkAction(bad, key+".attachments.action", o.Attachments.Action, false)
		p.attachmentAction = o.Attachments.Action
	}
	if o.Attachments.BlockExtensions != nil {
		p.blockExtensions = checkExtensions(bad, key+".attachments.block_extensions", o.Attachments.BlockExtensions)
	}
	if o.Attachments.BlockTypes != nil {
		p.blockTypes = checkTypes(bad, key+".attachments.block_types", o.Attachments.BlockTypes)
	}
	for _, f := range []struct {
		v   *float64
		dst *float64
	}{{o.Spam.TagScore, &p.spam.TagScore}, {o.Spam.QuarantineScore, &p.spam.QuarantineScore}, {o.Spam.RejectScore, &p.spam.RejectScore}} {
		if f.v != nil {
			*f.dst = *f.v
		}
	}
	checkThresholds(bad, key+".spam", p.spam)
	if o.Spam.SubjectTag != nil {
		checkSubjectTag(bad, key+".spam.subject_tag", *o.Spam.SubjectTag)
		p.subjectTag = *o.Spam.SubjectTag
	}
	if o.Spam.User != "" {
		p.spamdUser = o.Spam.User
	}
	o.content = p

	o.users = map[string]senderList{}
	for j, u := range o.Users {
		ukey := fmt.Sprintf("%s.user[%d]", key, j)
		addr := strings.ToLower(u.Address)
		if !validSenderPattern(addr) || strings.HasPrefix(addr, "@") {
			bad(ukey+".address", "%q is not an address (user@domain)", u.Address)
			continue
		}
		if c.OrganizationFor(domainOf(addr)) != o {
			bad(ukey+".address", "%q is not in the organisation's domains", u.Address)
		}
		o.users[addr] = senderList{
			safe:    parseSenderSet(ukey+".safe", u.Safe, bad),
			blocked: parseSenderSet(ukey+".blocked", u.Blocked, bad),
		}
	}
}

func checkAction(bad func(key, format string, args ...any), key string, a Action, allowUnset bool) {
	switch {
	case a == invalid:
		bad(key, "unknown action (want accept, tag, quarantine, tempfail, reject or discard)")
	case a == unset && !allowUnset:
		bad(key, "an action is required")
	}
}

func checkThresholds(bad func(key, format string, args ...any), key string, t SpamThresholds) {
	steps := []struct {
		name  string
		score float64
	}{{"tag_score", t.TagScore}, {"quarantine_score", t.QuarantineScore}, {"reject_score", t.RejectScore}}
	last := ""
	lastScore := 0.0
	for _, s := range steps {
		if s.score < 0 {
			bad(key+"."+s.name, "must be 0 (off) or a positive score, not %g", s.score)
			continue
		}
		if s.score == 0 {
			continue
		}
		if last != "" && s.score < lastScore {
			bad(key+"."+s.name, "%g is below %s (%g): the steps must not decrease", s.score, last, lastScore)
		}
		last, lastScore = s.name, s.score
	}
}

func checkSubjectTag(bad func(key, format string, args ...any), key, tag string) {
	if strings.ContainsAny(tag, "\r\n") || len(tag) > 64 {
		bad(key, "must be one line of at most 64 characters")
	}
}

func checkExtensions(bad func(key, format string, args ...any), key string, exts []string) []string {
	out := make([]string, 0, len(exts))
	for _, e := range exts {
		e = strings.ToLower(strings.TrimPrefix(strings.TrimSpace(e), "."))
		if e == "" || strings.ContainsAny(e, "./\\ ") {
			bad(key, "%q is not a file extension such as \"exe\"", e)
			continue
		}
		out = append(out, e)
	}
	return out
}

// checkTypes validates detected-type names and returns them in the
// scanner's short form; MIME type names as file(1) prints them
// ("application/x-dosexec") are accepted too.
func checkTypes(bad func(key, format string, args ...any), key string, types []string) []string {
	known := map[string]bool{}
	for _, t := range KnownAttachmentTypes() {
		known[t] = true
	}
	out := make([]string, 0, len(types))
	for _, t := range types {
		name := strings.ToLower(strings.TrimSpace(t))
		if short, ok := mimeTypeNames[name]; ok {
			name = short
		}
		if !known[name] {
			bad(key, "%q is not a type mxguard detects (one of %s, or a MIME type name of one of them such as \"application/x-dosexec\")", t, strings.Join(KnownAttachmentTypes(), ", "))
			continue
		}
		out = append(out, name)
	}
	return out
}

// mimeTypeNames maps MIME type names, as file(1) and admins know them, to
// the detected types of scanners/attach.
var mimeTypeNames = map[string]string{
	"application/x-dosexec":                         "pe",
	"application/vnd.microsoft.portable-executable": "pe",
	"application/x-msdownload":                      "pe",
	"application/x-executable":                      "elf",
	"application/x-sharedlib":                       "elf",
	"application/x-mach-binary":                     "macho",
	"text/x-shellscript":                            "script",
	"application/x-ole-storage":                     "ole",
	"application/x-msi":                             "msi",
	"application/x-ms-shortcut":                     "lnk",
	"application/x-iso9660-image":                   "iso",
	"application/x-apple-diskimage":                 "dmg",
	"application/zip":                               "zip",
	"application/x-rar":                             "rar",
	"application/vnd.rar":                           "rar",
	"application/x-7z-compressed":                   "7z",
	"application/gzip":                              "gzip",
	"application/vnd.ms-cab-compressed":             "cab",
	"application/pdf":                               "pdf",
}

// Size is a byte count written as text: "25MB", "512KB", "1GB" or a plain
// number of bytes. KB, MB and GB are binary (1024-based), as clamd reads them.
type Size struct {
	Bytes int64
	err   error
}

func (s *Size) UnmarshalText(b []byte) error {
	s.Bytes, s.err = parseSize(string(b))
	return nil
}

// UnmarshalTOML accepts a bare integer too.
func (s *Size) UnmarshalTOML(v any) error {
	switch v := v.(type) {
	case int64:
		s.Bytes, s.err = v, nil
		if v < 0 {
			s.err = fmt.Errorf("%d: a size must not be negative", v)
		}
	case string:
		s.Bytes, s.err = parseSize(v)
	default:
		s.err = fmt.Errorf("%v is not a size (e.g. \"25MB\")", v)
	}
	return nil
}

func (s Size) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

func (s Size) String() string {
	for _, u := range []struct {
		name string
		n    int64
	}{{"GB", 1 << 30}, {"MB", 1 << 20}, {"KB", 1 << 10}} {
		if s.Bytes >= u.n && s.Bytes%u.n == 0 {
			return strconv.FormatInt(s.Bytes/u.n, 10) + u.name
		}
	}
	return strconv.FormatInt(s.Bytes, 10)
}

func parseSize(text string) (int64, error) {
	s := strings.ToUpper(strings.TrimSpace(text))
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		n      int64
	}{{"GIB", 1 << 30}, {"MIB", 1 << 20}, {"KIB", 1 << 10}, {"GB", 1 << 30}, {"MB", 1 << 20}, {"KB", 1 << 10}, {"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}, {"B", 1}} {
		if rest, ok := strings.CutSuffix(s, u.suffix); ok {
			s, mult = strings.TrimSpace(rest), u.n
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("%q is not a size (e.g. \"25MB\", \"512KB\", or a number of bytes)", text)
	}
	return n * mult, nil
}

// contentDefaults are the defaults of the content sections.
func contentDefaults(c *Config) {
	c.Milter.ContentTimeout = Duration{Duration: 120 * time.Second}
	c.Milter.BodyMemory = Size{Bytes: 1 << 20}
	c.Virus = VirusConfig{
		Engine:  "none",
		Address: "unix:/run/clamav/clamd.ctl",
		Timeout: Duration{Duration: 30 * time.Second},
		MaxSize: Size{Bytes: 25 << 20},
		OnError: Tempfail,
		Action:  Reject,
	}
	c.Spam = SpamConfig{
		Engine:         "none",
		Timeout:        Duration{Duration: 20 * time.Second},
		MaxSize:        Size{Bytes: 2 << 20},
		OnError:        Accept,
		SpamThresholds: SpamThresholds{TagScore: 5, QuarantineScore: 10, RejectScore: 15},
		Outbound:       SpamThresholds{QuarantineScore: 10, RejectScore: 15},
	}
	c.Attachments = AttachmentConfig{
		BlockExtensions: defaultBlockedExtensions(),
		BlockTypes:      defaultBlockedTypes(),
		Action:          Reject,
	}
	c.Senders = SenderLists{Safe: []string{}, Blocked: []string{}}
}

// spamAddressDefault is the engine's usual address when [spam] names none.
func spamAddressDefault(engine string) string {
	switch engine {
	case "spamd":
		return "inet:127.0.0.1:783"
	case "rspamd":
		return "http://127.0.0.1:11333"
	}
	return ""
}
