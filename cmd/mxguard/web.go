package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/mxguard/mxguard/logstore"
	"github.com/mxguard/mxguard/policy"
	"github.com/mxguard/mxguard/quarantine"
	"github.com/mxguard/mxguard/web"
)

const webUsage = `usage: mxguard web [-config PATH] [-listen IP:PORT] [-postfix-config DIR]

Serves the admin console alone, at [web] listen, against the transaction
log at [log] path (read-only; a release or deletion opens it for writing
to record who did it, as mxguard quarantine does). mxguard serve serves
the same console itself when [web] listen is set; use this command to run
it apart from the milter, e.g. as root, which postsuper needs to release
and delete, while the milter runs as an unprivileged user: leave [web]
listen unset and give -listen. Accounts: mxguard user.

flags:
  -config PATH          mxguard's configuration (default ` + policy.DefaultPath + `)
  -listen IP:PORT       where to listen, instead of [web] listen
  -postfix-config DIR   the Postfix instance's configuration directory (postqueue/postsuper -c DIR)

It stops on SIGTERM or SIGINT. docs/web.md has the details.
`

// webShutdownTimeout bounds the wait for running requests at shutdown.
const webShutdownTimeout = 10 * time.Second

func cmdWeb(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return webMain(ctx, args, stdout, stderr)
}

// webMain is mxguard web; it serves until ctx ends.
func webMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("mxguard web", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	cfgPath := fs.String("config", policy.DefaultPath, "")
	pfConfig := fs.String("postfix-config", "", "")
	listen := fs.String("listen", "", "")
	rest, err := parseInterspersed(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(stdout, webUsage)
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "mxguard web: %v\n\n%s", err, webUsage)
		return 2
	}
	if len(rest) > 0 {
		fmt.Fprintf(stderr, "mxguard web: unexpected argument %q\n", rest[0])
		return 2
	}
	cfg, err := policy.Load(*cfgPath)
	if err != nil {
		fmt.Fprintln(stderr, "mxguard:", err)
		return 1
	}
	if *listen != "" {
		if _, err := netip.ParseAddrPort(*listen); err != nil {
			fmt.Fprintf(stderr, "mxguard web: -listen %q: want IP:PORT, e.g. 127.0.0.1:8895\n", *listen)
			return 2
		}
		cfg.Web.Listen = *listen
	}
	if cfg.Web.Listen == "" {
		fmt.Fprintf(stderr, "mxguard web: [web] listen is not set in %s; set it (listen = \"127.0.0.1:8895\") or give -listen\n", *cfgPath)
		return 1
	}
	log := newLogger(cfg.Log.Level, stderr)
	if err := runWeb(ctx, cfg, *cfgPath, *pfConfig, log); err != nil {
		log.Error("mxguard web stopped", "err", err)
		return 1
	}
	return 0
}

// runWeb serves the console alone until ctx ends.
func runWeb(ctx context.Context, cfg *policy.Config, cfgPath, pfConfig string, log *slog.Logger) error {
	if _, err := os.Stat(cfg.Log.Path); err != nil {
		return fmt.Errorf("transaction log: %w (mxguard serve creates it; is -config right?)", err)
	}
	store, err := logstore.OpenReadOnly(cfg.Log.Path)
	if err != nil {
		return fmt.Errorf("transaction log: %w", err)
	}
	defer store.Close()
	recordLog := func() (quarantine.Log, func(), error) {
		s, _, err := openQuarantineLog(cfgPath, "", true)
		if err != nil {
			return nil, nil, err
		}
		return s, func() { s.Close() }, nil
	}
	c, err := startConsole(cfg, store, newMTA(pfConfig), recordLog, log)
	if err != nil {
		return err
	}
	select {
	case <-ctx.Done():
	case err := <-c.served:
		c.stop()
		return fmt.Errorf("web console: %w", err)
	}
	log.Info("web console shutting down")
	c.stop()
	log.Info("web console stopped")
	return nil
}

// console is a running web console.
type console struct {
	srv      *web.Server
	accounts *web.Accounts
	served   chan error // Serve's error, when it fails
	stopOnce sync.Once
}

// startConsole opens the accounts database, listens at [web] listen and
// serves the console in the background.
func startConsole(cfg *policy.Config, store *logstore.Store, mta quarantine.MTA, recordLog func() (quarantine.Log, func(), error), log *slog.Logger) (*console, error) {
	accounts, err := web.OpenAccounts(cfg.Web.DB)
	if err != nil {
		return nil, err
	}
	var orgs []string
	for _, o := range cfg.Organizations {
		orgs = append(orgs, o.Name)
	}
	srv, err := web.New(web.Options{
		Config: cfg.Web, Organizations: orgs, Accounts: accounts, Log: store, MTA: mta,
		RecordLog: recordLog, Logger: log,
	})
	if err != nil {
		accounts.Close()
		return nil, err
	}
	ln, err := net.Listen("tcp", cfg.Web.Listen)
	if err != nil {
		accounts.Close()
		return nil, fmt.Errorf("web.listen: %w", err)
	}
	c := &console{srv: srv, accounts: accounts, served: make(chan error, 1)}
	go func() {
		if err := srv.Serve(ln); err != nil {
			c.served <- err
		}
	}()
	scheme := "http"
	if cfg.Web.TLS() {
		scheme = "https"
	}
	log.Info("web console listening", "url", scheme+"://"+ln.Addr().String()+"/", "accounts", cfg.Web.DB)
	return c, nil
}

// stop shuts the console down: no new requests, running ones finish. It
// may be called more than once.
func (c *console) stop() {
	c.stopOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), webShutdownTimeout)
		defer cancel()
		c.srv.Shutdown(ctx)
		c.accounts.Close()
	})
}
