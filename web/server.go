// Package web is mxguard's admin console: the transaction log (search and
// the explanation of one transaction), the quarantine (release, delete)
// and a dashboard, in server-rendered HTML that works without JavaScript.
//
// It reads the log through logstore's queries and explains a transaction
// with logstore/explain, as mxguard log does; it acts on the quarantine
// through quarantine.Manager, as mxguard quarantine does. It never reaches
// into the milter.
//
// Accounts, sessions and login events live in a SQLite file of their own
// (Accounts). Every user belongs to one organisation, whose transactions
// and held mail are all they see, or is global. Admins may release and
// delete held mail; viewers only look.
//
// Security properties, each tested: sessions are random 32-byte tokens
// stored hashed, ended server-side at logout, after [web] session_idle
// without use and [web] session_max after login; cookies are HttpOnly,
// SameSite=Strict, and Secure over HTTPS. Every state change is a POST
// that must pass http.CrossOriginProtection and carry the session's CSRF
// token. Logins are throttled per account and per client address. Every
// response carries a Content-Security-Policy that allows no script at all,
// and all output goes through html/template, with control characters
// replaced. Another organisation's transaction or held message is "not
// found", never shown.
package web

import (
	"cmp"
	"context"
	"crypto/subtle"
	"crypto/tls"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/mxguard/mxguard/logstore"
	"github.com/mxguard/mxguard/policy"
	"github.com/mxguard/mxguard/quarantine"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Options configure a Server.
type Options struct {
	// Config is the [web] section.
	Config policy.WebConfig
	// Organizations are the configured organisations' names, for the
	// organisation filter of global users.
	Organizations []string
	Accounts      *Accounts
	// Log is the transaction log the console reads.
	Log *logstore.Store
	// MTA holds the quarantined mail (Postfix).
	MTA quarantine.MTA
	// RecordLog returns the log that releases and deletions are recorded
	// in, and a function to call when done with it; nil records in Log.
	// mxguard web, whose Log is read-only, opens the file for writing per
	// action, as mxguard quarantine does.
	RecordLog func() (quarantine.Log, func(), error)
	// Logger receives logins, releases and deletions; nil discards.
	Logger *slog.Logger
	// Now is the clock; nil means time.Now. Tests move it.
	Now func() time.Time
}

// Server is the console.
type Server struct {
	opts     Options
	cfg      policy.WebConfig
	log      *slog.Logger
	now      func() time.Time
	pages    map[string]*template.Template
	handler  http.Handler
	logins   keyedMutex
	bcryptCh chan struct{} // bounds concurrent password checks

	statsMu    sync.Mutex
	statsCache map[string]cachedStats // by organisation; see dashboardStats

	srv       *http.Server
	mu        sync.Mutex
	serving   bool
	done      chan struct{} // closed by Shutdown
	closeOnce sync.Once
}

// cookieName is the session cookie's name.
const cookieName = "mxguard_session"

// keepLogins is how long login events are kept.
const keepLogins = 90 * 24 * time.Hour

// New returns a console; Handler serves it, Serve serves it on a listener.
func New(opts Options) (*Server, error) {
	if opts.Accounts == nil || opts.Log == nil || opts.MTA == nil {
		return nil, errors.New("web: Accounts, Log and MTA are required")
	}
	cfg := opts.Config
	if cfg.SessionIdle.Duration <= 0 || cfg.SessionMax.Duration <= 0 || cfg.LoginAttempts < 1 || cfg.LoginLockout.Duration <= 0 {
		return nil, errors.New("web: session_idle, session_max, login_attempts and login_lockout must be set (policy.Default has them)")
	}
	s := &Server{
		opts:     opts,
		cfg:      cfg,
		log:      cmp.Or(opts.Logger, slog.New(slog.DiscardHandler)),
		now:      opts.Now,
		bcryptCh: make(chan struct{}, max(2, runtime.NumCPU())),
	}
	if opts.Now == nil {
		s.now = time.Now
	}
	var err error
	if s.pages, err = parsePages(); err != nil {
		return nil, err
	}
	s.handler = s.routes()
	s.done = make(chan struct{})
	s.srv = &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      2 * time.Minute, // a release waits for Postfix
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	if cfg.TLS() {
		// Loaded now, so that a bad file stops the start, not the first
		// request.
		cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("web: tls_cert, tls_key: %w", err)
		}
		s.srv.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	}
	return s, nil
}

func parsePages() (map[string]*template.Template, error) {
	funcs := template.FuncMap{
		"actionClass": actionClass,
	}
	names, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		return nil, err
	}
	pages := map[string]*template.Template{}
	for _, n := range names {
		name := strings.TrimSuffix(strings.TrimPrefix(n, "templates/"), ".html")
		if name == "layout" {
			continue
		}
		t, err := template.New(name).Funcs(funcs).ParseFS(templateFS, "templates/layout.html", n)
		if err != nil {
			return nil, fmt.Errorf("web: template %s: %w", name, err)
		}
		pages[name] = t
	}
	return pages, nil
}

// Handler returns the console's HTTP handler.
func (s *Server) Handler() http.Handler { return s.handler }

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	static, _ := fs.Sub(staticFS, "static")
	files := http.FileServerFS(static)
	mux.Handle("GET /static/", http.StripPrefix("/static/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=3600")
		files.ServeHTTP(w, r)
	})))
	mux.HandleFunc("GET /login", s.loginPage)
	mux.HandleFunc("POST /login", s.login)
	mux.Handle("POST /logout", s.authed(s.logout))
	mux.Handle("GET /{$}", s.authed(s.dashboard))
	mux.Handle("GET /log", s.authed(s.logSearch))
	mux.Handle("GET /log/{id}", s.authed(s.logDetail))
	mux.Handle("GET /quarantine", s.authed(s.quarantineList))
	mux.Handle("GET /quarantine/{queueid}/{op}", s.authed(s.quarantineConfirm))
	mux.Handle("POST /quarantine/{queueid}/{op}", s.authed(s.quarantineAct))

	cop := http.NewCrossOriginProtection()
	cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.log.Warn("web: cross-origin request refused", "method", r.Method, "path", r.URL.Path, "client", s.clientAddr(r).String(),
			"origin", r.Header.Get("Origin"), "sec_fetch_site", r.Header.Get("Sec-Fetch-Site"))
		s.errorPage(w, r, nil, http.StatusForbidden, "Cross-origin request refused.")
	}))
	return s.secure(cop.Handler(mux))
}

// contentSecurityPolicy allows no script at all, styles and images from
// the console only, and no framing.
const contentSecurityPolicy = "default-src 'self'; script-src 'none'; style-src 'self'; img-src 'self'; object-src 'none'; " +
	"base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// secure sets the security headers of every response.
func (s *Server) secure(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", contentSecurityPolicy)
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Referrer-Policy", "same-origin")
		hd.Set("Cross-Origin-Opener-Policy", "same-origin")
		hd.Set("Cross-Origin-Resource-Policy", "same-origin")
		hd.Set("Cache-Control", "no-store")
		if s.https(r) {
			hd.Set("Strict-Transport-Security", "max-age=31536000")
		}
		h.ServeHTTP(w, r)
	})
}

// Client addresses and trusted proxies.

// peerTrusted reports whether the request comes straight from a trusted
// proxy, whose X-Forwarded-* headers are then believed.
func (s *Server) peerTrusted(r *http.Request) (netip.Addr, bool) {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}, false
	}
	peer := ap.Addr().Unmap()
	return peer, s.trusted(peer)
}

func (s *Server) trusted(a netip.Addr) bool {
	for _, n := range s.cfg.TrustedProxies {
		if n.Prefix.IsValid() && n.Prefix.Contains(a) {
			return true
		}
	}
	return false
}

// clientAddr is the client's address: the connection's peer or, behind
// trusted proxies, the last address in X-Forwarded-For that is not one of
// them.
func (s *Server) clientAddr(r *http.Request) netip.Addr {
	peer, ok := s.peerTrusted(r)
	if !ok {
		return peer
	}
	var hops []string
	for _, v := range r.Header.Values("X-Forwarded-For") {
		hops = append(hops, strings.Split(v, ",")...)
	}
	client := peer
	for i := len(hops) - 1; i >= 0; i-- {
		a, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
		if err != nil {
			break // garbage: the hops beyond it cannot be trusted
		}
		client = a.Unmap()
		if !s.trusted(client) {
			break
		}
	}
	return client
}

// https reports whether the browser talks HTTPS: to us, or to a trusted
// proxy that says so.
func (s *Server) https(r *http.Request) bool {
	if r.TLS != nil {
		return true
	}
	if _, ok := s.peerTrusted(r); !ok {
		return false
	}
	vals := strings.Split(r.Header.Get("X-Forwarded-Proto"), ",")
	return strings.EqualFold(strings.TrimSpace(vals[len(vals)-1]), "https")
}

// throttleKey is what per-client throttling counts by: the address, or
// its /64 for IPv6, where one client has a whole /64.
func throttleKey(a netip.Addr) string {
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.String()
	}
	return a.String()
}

// Sessions.

// authed runs h with the request's session, or sends the browser to the
// login page.
func (s *Server) authed(h func(http.ResponseWriter, *http.Request, *session)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sess, err := s.session(r)
		if err != nil {
			s.internalError(w, r, nil, err)
			return
		}
		if sess == nil {
			if c, err := r.Cookie(cookieName); err == nil && c.Value != "" {
				s.clearCookie(w, r) // expired or logged out elsewhere
			}
			if r.Method == http.MethodGet {
				http.Redirect(w, r, "/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
				return
			}
			http.Redirect(w, r, "/login", http.StatusSeeOther)
			return
		}
		if r.Method == http.MethodPost {
			r.Body = http.MaxBytesReader(w, r.Body, maxForm)
			got := r.PostFormValue("csrf")
			if subtle.ConstantTimeCompare([]byte(got), []byte(sess.csrf)) != 1 {
				s.log.Warn("web: POST without the session's CSRF token refused", "path", r.URL.Path, "user", sess.user.Email)
				s.errorPage(w, r, sess, http.StatusForbidden, "This form has expired or did not come from this console. Reload the page and try again.")
				return
			}
		}
		h(w, r, sess)
	})
}

// maxForm bounds a form's body.
const maxForm = 16 << 10

func (s *Server) session(r *http.Request) (*session, error) {
	c, err := r.Cookie(cookieName)
	if err != nil {
		return nil, nil
	}
	return s.opts.Accounts.session(r.Context(), c.Value, s.now(), s.cfg.SessionIdle.Duration, s.cfg.SessionMax.Duration)
}

func (s *Server) setCookie(w http.ResponseWriter, r *http.Request, token string) {
	http.SetCookie(w, &http.Cookie{
		Name: cookieName, Value: token, Path: "/",
		HttpOnly: true, Secure: s.https(r), SameSite: http.SameSiteStrictMode,
		// A session cookie (no Max-Age): the browser forgets it when it
		// closes; the server ends it at session_max anyway.
	})
}

func (s *Server) clearCookie(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: "", Path: "/", MaxAge: -1,
		HttpOnly: true, Secure: s.https(r), SameSite: http.SameSiteStrictMode})
}

// Rendering.

// page is what every template gets.
type page struct {
	Title string
	User  *User
	CSRF  string
	Flash string
	Nav   string // the current section: dashboard, log, quarantine
	Data  any
}

func (s *Server) render(w http.ResponseWriter, r *http.Request, sess *session, status int, name string, p page) {
	if sess != nil {
		p.User, p.CSRF = sess.user, sess.csrf
		if sess.flash != "" && status < 300 {
			p.Flash = sess.flash
			if err := s.opts.Accounts.takeFlash(r.Context(), sess.tokenHash); err != nil {
				s.log.Warn("web: clearing a flash message", "err", err)
			}
		}
	}
	t := s.pages[name]
	var b strings.Builder
	if err := t.ExecuteTemplate(&b, "layout", p); err != nil {
		s.log.Error("web: rendering", "page", name, "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	w.Write([]byte(b.String()))
}

func (s *Server) errorPage(w http.ResponseWriter, r *http.Request, sess *session, status int, msg string) {
	if msg == "" {
		msg = http.StatusText(status) + "."
	}
	s.render(w, r, sess, status, "error", page{Title: http.StatusText(status), Data: msg})
}

func (s *Server) internalError(w http.ResponseWriter, r *http.Request, sess *session, err error) {
	s.log.Error("web: request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	s.errorPage(w, r, sess, http.StatusInternalServerError, "Something went wrong; mxguard's log has the details.")
}

// clean makes text the sender chose (subject, addresses, HELO) inert
// beyond what html/template does: control characters and invalid UTF-8
// become '?', and text longer than n runes (n > 0) is cut.
func clean(s string, n int) string {
	var b strings.Builder
	count := 0
	for _, r := range s {
		if n > 0 && count == n {
			b.WriteString("…")
			break
		}
		if r == utf8.RuneError || unicode.IsControl(r) || r == '\u2028' || r == '\u2029' ||
			unicode.Is(unicode.Bidi_Control, r) {
			r = '?'
		}
		b.WriteRune(r)
		count++
	}
	return b.String()
}

// Serving.

// Serve serves the console on ln, with TLS when [web] tls_cert is set,
// until Shutdown. It returns nil after Shutdown.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.serving {
		s.mu.Unlock()
		return errors.New("web: already serving")
	}
	s.serving = true
	s.mu.Unlock()
	go s.pruneLoop()

	var err error
	if s.cfg.TLS() {
		err = s.srv.ServeTLS(ln, "", "") // the certificate New loaded
	} else {
		err = s.srv.Serve(ln)
	}
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops serving: it closes the listener and waits for running
// requests until ctx ends. Serve called after it returns at once.
func (s *Server) Shutdown(ctx context.Context) error {
	s.closeOnce.Do(func() { close(s.done) })
	return s.srv.Shutdown(ctx)
}

// pruneLoop deletes expired sessions and old login events hourly, until
// the server shuts down.
func (s *Server) pruneLoop() {
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		if err := s.opts.Accounts.prune(ctx, s.now(), s.cfg.SessionIdle.Duration, s.cfg.SessionMax.Duration, keepLogins); err != nil {
			s.log.Warn("web: pruning sessions and login events", "err", err)
		}
		cancel()
		select {
		case <-s.done:
			return
		case <-t.C:
		}
	}
}

// keyedMutex serializes the logins of one account or client, so that
// parallel attempts cannot all pass the throttle before any failure is
// recorded.
type keyedMutex struct {
	mu sync.Mutex
	m  map[string]*keyedEntry
}

type keyedEntry struct {
	sync.Mutex
	key string
	n   int // holders and waiters
}

// lock locks every key and returns the unlock. Keys are taken in sorted
// order, so two callers never wait for each other crosswise.
func (k *keyedMutex) lock(keys ...string) func() {
	keys = slices.Sorted(slices.Values(keys))
	var held []*keyedEntry
	for i, key := range keys {
		if i > 0 && key == keys[i-1] {
			continue
		}
		k.mu.Lock()
		if k.m == nil {
			k.m = map[string]*keyedEntry{}
		}
		e := k.m[key]
		if e == nil {
			e = &keyedEntry{key: key}
			k.m[key] = e
		}
		e.n++
		k.mu.Unlock()
		e.Lock()
		held = append(held, e)
	}
	return func() {
		for i := len(held) - 1; i >= 0; i-- {
			e := held[i]
			e.Unlock()
			k.mu.Lock()
			e.n--
			if e.n == 0 {
				delete(k.m, e.key)
			}
			k.mu.Unlock()
		}
	}
}
