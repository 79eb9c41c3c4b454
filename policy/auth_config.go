package policy

import (
	"fmt"
	"strings"
	"time"

	"github.com/mxguard/mxguard/scanners/dkim"
)

// DKIMConfig is the [dkim] section: verification of inbound signatures and
// the keys that sign our users' mail.
type DKIMConfig struct {
	Verify  bool      `toml:"verify"`
	Timeout Duration  `toml:"timeout"`
	Keys    []DKIMKey `toml:"key"`
}

// DKIMKey is one [[dkim.key]]: mail whose From is in Domain is signed with
// the private key in KeyFile, published at Selector._domainkey.Domain.
type DKIMKey struct {
	Domain   string `toml:"domain"`
	Selector string `toml:"selector"`
	KeyFile  string `toml:"key_file"`
}

// DMARCConfig is the [dmarc] section: evaluation of inbound mail and what
// a failing message gets for each policy its domain asks for.
type DMARCConfig struct {
	Enabled    bool   `toml:"enabled"`
	Reject     Action `toml:"reject"`     // the domain asks p=reject
	Quarantine Action `toml:"quarantine"` // the domain asks p=quarantine
	TempError  Action `toml:"temperror"`  // the record could not be fetched
}

// OrgDMARC is [organization.dmarc]: an organisation's overrides.
type OrgDMARC struct {
	Reject     Action `toml:"reject,omitempty"`
	Quarantine Action `toml:"quarantine,omitempty"`
}

func authDefaults(c *Config) {
	c.DKIM = DKIMConfig{Verify: true, Timeout: Duration{Duration: 10 * time.Second}, Keys: []DKIMKey{}}
	c.DMARC = DMARCConfig{Enabled: true, Reject: Reject, Quarantine: Quarantine, TempError: Tempfail}
}

// validateAuth checks [dkim] and [dmarc] and loads the signing keys.
func (c *Config) validateAuth(bad func(key, format string, args ...any)) {
	switch d := c.DKIM.Timeout; {
	case d.err != nil:
		bad("dkim.timeout", "%v", d.err)
	case d.Duration <= 0:
		bad("dkim.timeout", "must be a positive duration such as \"10s\"")
	}
	c.signingKeys = map[string]*dkim.Key{}
	for i, k := range c.DKIM.Keys {
		key := fmt.Sprintf("dkim.key[%d]", i)
		domain := strings.ToLower(strings.TrimSuffix(k.Domain, "."))
		switch {
		case !validDomain(domain):
			bad(key+".domain", "%q is not a domain name", k.Domain)
			continue
		case c.signingKeys[domain] != nil:
			bad(key+".domain", "domain %q has a signing key already", domain)
			continue
		case k.Selector == "":
			bad(key+".selector", "a selector is required")
			continue
		case k.KeyFile == "":
			bad(key+".key_file", "the private key's file is required (mxguard dkim-keygen writes one)")
			continue
		}
		loaded, err := dkim.LoadKey(domain, k.Selector, k.KeyFile)
		if err != nil {
			bad(key+".key_file", "%v", err)
			continue
		}
		c.signingKeys[domain] = loaded
	}
	checkAction(bad, "dmarc.reject", c.DMARC.Reject, false)
	checkAction(bad, "dmarc.quarantine", c.DMARC.Quarantine, false)
	checkAction(bad, "dmarc.temperror", c.DMARC.TempError, false)
}

func (c *Config) validateOrgAuth(o *Organization, key string, bad func(key, format string, args ...any)) {
	o.dmarc = c.DMARC
	if o.DMARC.Reject != unset {
		checkAction(bad, key+".dmarc.reject", o.DMARC.Reject, false)
		o.dmarc.Reject = o.DMARC.Reject
	}
	if o.DMARC.Quarantine != unset {
		checkAction(bad, key+".dmarc.quarantine", o.DMARC.Quarantine, false)
		o.dmarc.Quarantine = o.DMARC.Quarantine
	}
}

// dmarcFor is the DMARC configuration that applies to t.
func (c *Config) dmarcFor(t *Transaction) DMARCConfig {
	if o := t.Organization(c); o != nil {
		return o.dmarc
	}
	return c.DMARC
}

// SigningKey returns the key that signs mail from domain, or nil.
func (c *Config) SigningKey(domain string) *dkim.Key {
	return c.signingKeys[strings.ToLower(strings.TrimSuffix(domain, "."))]
}
