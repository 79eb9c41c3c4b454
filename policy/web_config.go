package policy

import (
	"net/netip"
	"path/filepath"
)

// WebConfig is the [web] section: the admin console. It is off while
// Listen is empty.
type WebConfig struct {
	Listen         string    `toml:"listen"`   // "127.0.0.1:8895"; "" = off
	TLSCert        string    `toml:"tls_cert"` // PEM files; both or neither
	TLSKey         string    `toml:"tls_key"`
	TrustedProxies []Network `toml:"trusted_proxies"` // whose X-Forwarded-For/-Proto are believed
	DB             string    `toml:"db"`              // users, sessions and login events
	SessionIdle    Duration  `toml:"session_idle"`
	SessionMax     Duration  `toml:"session_max"`
	LoginAttempts  int       `toml:"login_attempts"` // failures per account and per client before a lockout
	LoginLockout   Duration  `toml:"login_lockout"`
}

// TLS reports whether the console serves HTTPS itself.
func (w WebConfig) TLS() bool { return w.TLSCert != "" }

func (c *Config) validateWeb(bad func(key, format string, args ...any)) {
	w := &c.Web
	if w.Listen != "" {
		if _, err := netip.ParseAddrPort(w.Listen); err != nil {
			bad("web.listen", "%q: want IP:PORT, e.g. \"127.0.0.1:8895\"", w.Listen)
		}
	}
	if (w.TLSCert == "") != (w.TLSKey == "") {
		bad("web.tls_cert", "tls_cert and tls_key go together")
	}
	for _, n := range w.TrustedProxies {
		if n.err != nil {
			bad("web.trusted_proxies", "%v", n.err)
		}
	}
	if w.DB == "" {
		bad("web.db", "must name the SQLite file of the console's users and sessions")
	} else if abs, err := filepath.Abs(w.DB); err == nil {
		w.DB = abs
	}
	for key, d := range map[string]Duration{"web.session_idle": w.SessionIdle, "web.session_max": w.SessionMax, "web.login_lockout": w.LoginLockout} {
		switch {
		case d.err != nil:
			bad(key, "%v", d.err)
		case d.Duration <= 0:
			bad(key, "must be a positive duration such as \"30m\"")
		}
	}
	if w.LoginAttempts < 1 {
		bad("web.login_attempts", "must be at least 1, not %d", w.LoginAttempts)
	}
}
