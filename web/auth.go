package web

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"unicode/utf8"
)

// loginData is the login page's.
type loginData struct {
	Email string
	Next  string
	Error string
}

func (s *Server) loginPage(w http.ResponseWriter, r *http.Request) {
	next := safeNext(r.URL.Query().Get("next"))
	if sess, err := s.session(r); err == nil && sess != nil {
		http.Redirect(w, r, next, http.StatusSeeOther)
		return
	}
	s.render(w, r, nil, http.StatusOK, "login", page{Title: "Log in", Data: loginData{Next: next}})
}

// safeNext returns where to go after login: a path on this console, never
// another site ("//evil.example", "https://...", "/\evil").
func safeNext(next string) string {
	u, err := url.Parse(next)
	if next == "" || err != nil || u.Scheme != "" || u.Host != "" || u.User != nil ||
		!strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") || strings.ContainsAny(next, "\\\r\n\t") ||
		next == "/login" || strings.HasPrefix(next, "/login?") {
		return "/"
	}
	return next
}

// loginEmail is the typed email as login events and throttling key it:
// lower case, printable, bounded.
func loginEmail(s string) string {
	s = strings.ToLower(strings.TrimSpace(s))
	if len(s) > 254 {
		s = s[:254]
	}
	return strings.ToValidUTF8(s, "?")
}

func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxForm)
	if err := r.ParseForm(); err != nil {
		s.errorPage(w, r, nil, http.StatusBadRequest, "Bad form.")
		return
	}
	email, password := loginEmail(r.PostFormValue("email")), r.PostFormValue("password")
	next := safeNext(r.PostFormValue("next"))
	client := s.clientAddr(r)
	ckey := throttleKey(client)
	again := func(status int, msg string) {
		s.render(w, r, nil, status, "login", page{Title: "Log in", Data: loginData{Email: clean(email, 0), Next: next, Error: msg}})
	}
	if email == "" || password == "" {
		again(http.StatusBadRequest, "Give your email and password.")
		return
	}

	// One attempt at a time per account and per client: the count read
	// below must include every earlier attempt's failure.
	unlock := s.logins.lock("email:"+email, "client:"+ckey)
	defer unlock()
	ctx := r.Context()
	now := s.now()
	lockout := s.cfg.LoginLockout.Duration
	byEmail, byClient, err := s.opts.Accounts.failures(ctx, email, ckey, now.Add(-lockout))
	if err != nil {
		s.internalError(w, r, nil, err)
		return
	}
	if byEmail >= s.cfg.LoginAttempts || byClient >= s.cfg.LoginAttempts {
		// Not recorded: the failures that caused the lockout are, and a
		// flood of refused attempts must not fill the disk.
		s.log.Warn("web: login refused: locked out", "email", email, "client", client.String(),
			"account_failures", byEmail, "client_failures", byClient)
		again(http.StatusTooManyRequests, fmt.Sprintf("Too many failed logins. Try again in %s.", lockout))
		return
	}

	s.bcryptCh <- struct{}{}
	u, why, err := s.opts.Accounts.verify(ctx, email, password)
	<-s.bcryptCh
	if err != nil {
		s.internalError(w, r, nil, err)
		return
	}
	ev := LoginEvent{At: now, Email: email, Client: client.String(), OK: why == "", Detail: why}
	if u != nil {
		ev.Organization = u.Organization
	}
	if !ev.OK && (byEmail+1 >= s.cfg.LoginAttempts || byClient+1 >= s.cfg.LoginAttempts) {
		ev.Detail += " (now locked out)"
	}
	if err := s.opts.Accounts.recordLogin(ctx, ev, ckey); err != nil {
		s.internalError(w, r, nil, err)
		return
	}
	if !ev.OK {
		s.log.Warn("web: login failed", "email", email, "client", client.String(), "why", ev.Detail)
		again(http.StatusUnauthorized, "Wrong email or password.")
		return
	}

	// A new token at every login: a token planted before it is worthless.
	if c, err := r.Cookie(cookieName); err == nil && c.Value != "" && utf8.ValidString(c.Value) {
		s.opts.Accounts.endSession(ctx, hashToken(c.Value))
	}
	token, err := s.opts.Accounts.newSession(ctx, u, now)
	if err != nil {
		s.internalError(w, r, nil, err)
		return
	}
	s.log.Info("web: login", "email", email, "client", client.String())
	s.setCookie(w, r, token)
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (s *Server) logout(w http.ResponseWriter, r *http.Request, sess *session) {
	if err := s.opts.Accounts.endSession(r.Context(), sess.tokenHash); err != nil {
		s.internalError(w, r, sess, err)
		return
	}
	s.log.Info("web: logout", "email", sess.user.Email)
	s.clearCookie(w, r)
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}
