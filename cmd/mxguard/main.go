// Command mxguard is an email security gateway that runs as a milter beside
// Postfix or Sendmail.
//
//	mxguard serve        [-config PATH]   run the milter
//	mxguard check-config [-config PATH]   validate and print the effective configuration
//	mxguard quarantine list|release|delete  the MTA's hold queue, joined with the log
//	mxguard log search|show|stats ...     query the transaction log
//	mxguard web          [-config PATH]   serve the admin console alone
//	mxguard user add|passwd|del|list      the console's accounts
//	mxguard version                       print the version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"syscall"

	"github.com/mxguard/mxguard/logstore"
	"github.com/mxguard/mxguard/milter"
	"github.com/mxguard/mxguard/policy"
	"github.com/mxguard/mxguard/scanners/resolver"
	"github.com/mxguard/mxguard/scanners/spf"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = ""

const usage = `usage: mxguard <command> [flags]

commands:
  serve         run the milter (flags: -config PATH)
  check-config  validate the configuration and print it with defaults filled in (flags: -config PATH)
  quarantine    list, release or delete mail held in Postfix's hold queue
                (mxguard quarantine help)
  log           search the transaction log, explain one transaction, count (mxguard log help)
  dkim-keygen   write a DKIM signing key and print the DNS record to publish
  web           serve the admin console alone (serve runs it too when [web] listen is set)
  user          add, list, delete the console's users, set their passwords (mxguard user help)
  version       print the version

The default configuration file is ` + policy.DefaultPath + `.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "serve":
		return cmdServe(args[1:], stderr)
	case "check-config":
		return cmdCheckConfig(args[1:], stdout, stderr)
	case "quarantine":
		return cmdQuarantine(args[1:], stdout, stderr)
	case "log":
		return cmdLog(args[1:], stdout, stderr)
	case "dkim-keygen":
		return cmdDKIMKeygen(args[1:], stdout, stderr)
	case "web":
		return cmdWeb(args[1:], stdout, stderr)
	case "user":
		return cmdUser(args[1:], stdout, stderr)
	case "version", "-version", "--version":
		fmt.Fprintln(stdout, "mxguard", versionString())
		return 0
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "mxguard: unknown command %q\n\n%s", args[0], usage)
	return 2
}

func versionString() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "devel"
}

// loadConfig parses the flags every config-reading command takes and loads
// the configuration; on failure it says why and returns the exit code.
// subcommand picks the subcommand of "mxguard GROUP" from args: it answers
// help itself and refuses a missing or unknown one, returning ok false and
// the exit code then.
func subcommand(group string, args []string, known func(string) bool, usage string, stdout, stderr io.Writer) (sub string, code int, ok bool) {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return "", 2, false
	}
	switch sub = args[0]; {
	case sub == "help" || sub == "-h" || sub == "-help" || sub == "--help":
		fmt.Fprint(stdout, usage)
		return "", 0, false
	case !known(sub):
		fmt.Fprintf(stderr, "mxguard %s: unknown command %q\n\n%s", group, sub, usage)
		return "", 2, false
	}
	return sub, 0, true
}

// oneOf reports membership in a fixed list of subcommands.
func oneOf(names ...string) func(string) bool {
	return func(s string) bool { return slices.Contains(names, s) }
}

func loadConfig(name string, args []string, stderr io.Writer) (*policy.Config, int) {
	fs := flag.NewFlagSet("mxguard "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", policy.DefaultPath, "configuration file")
	if err := fs.Parse(args); err != nil {
		return nil, 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "mxguard %s: unexpected argument %q\n", name, fs.Arg(0))
		return nil, 2
	}
	cfg, err := policy.Load(*path)
	if err != nil {
		fmt.Fprintln(stderr, "mxguard:", err)
		return nil, 1
	}
	return cfg, 0
}

func cmdCheckConfig(args []string, stdout, stderr io.Writer) int {
	cfg, code := loadConfig("check-config", args, stderr)
	if cfg == nil {
		return code
	}
	fmt.Fprintf(stdout, "# the configuration is valid; with every default filled in:\n%s", cfg.Effective())
	return 0
}

func cmdServe(args []string, stderr io.Writer) int {
	cfg, code := loadConfig("serve", args, stderr)
	if cfg == nil {
		return code
	}
	log := newLogger(cfg.Log.Level, stderr)
	if err := serve(cfg, log); err != nil {
		log.Error("mxguard stopped", "err", err)
		return 1
	}
	return 0
}

func newLogger(level string, w io.Writer) *slog.Logger {
	var l slog.Level
	_ = l.UnmarshalText([]byte(level)) // validated with the configuration
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l}))
}

// serve wires the parts together and runs until SIGTERM or SIGINT; then it
// stops accepting, lets running sessions finish (milter.shutdown_timeout),
// flushes the log and returns nil. With [web] listen set, it serves the
// admin console too, on the same log, and stops it first.
func serve(cfg *policy.Config, log *slog.Logger) error {
	tuneGC()
	if path := os.Getenv("MXGUARD_CPUPROFILE"); path != "" {
		stop, err := startCPUProfile(path)
		if err != nil {
			return err
		}
		defer stop()
	}
	res, err := resolver.New(resolver.Config{Server: cfg.DNS.Resolver, Timeout: cfg.DNS.Timeout.Duration, CacheSize: cfg.DNS.CacheSize})
	if err != nil {
		return fmt.Errorf("dns: %w", err)
	}
	store, err := logstore.Open(logstore.Options{Path: cfg.Log.Path, Synchronous: cfg.Log.Synchronous, Logger: log})
	if err != nil {
		return fmt.Errorf("transaction log: %w", err)
	}
	defer store.Close()
	// Old transactions are deleted in the background; Close stops it too.
	pruneCtx, stopPruning := context.WithCancel(context.Background())
	defer stopPruning()
	store.StartPruner(pruneCtx, pruneEvery, func() logstore.Retention { return retentionOf(cfg) }, log)

	var web *console
	if cfg.Web.Listen != "" {
		if web, err = startConsole(cfg, store, newMTA(""), nil, log); err != nil {
			return fmt.Errorf("web console: %w", err)
		}
		defer web.stop()
		go func() {
			// The console failing is no reason to stop mail.
			if err := <-web.served; err != nil {
				log.Error("web console stopped", "err", err)
			}
		}()
	}

	engine := policy.NewEngine(cfg, &spf.Checker{Resolver: res})
	engine.UseDNS(res)
	ln, err := milter.Listen(cfg.Milter)
	if err != nil {
		return fmt.Errorf("milter.listen: %w", err)
	}
	srv := milter.NewServer(engine, store, log)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	log.Info("mxguard listening", "addr", ln.Addr().String(), "version", versionString(), "log", cfg.Log.Path)

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	select {
	case s := <-sig:
		log.Info("shutting down", "signal", s.String(), "sessions", srv.Active())
	case err := <-served:
		return fmt.Errorf("milter server: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.Milter.ShutdownTimeout.Duration)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		log.Warn("shutdown", "err", err)
	}
	if web != nil {
		web.stop()
	}
	if err := store.Close(); err != nil {
		return fmt.Errorf("closing the transaction log: %w", err)
	}
	log.Info("mxguard stopped")
	return nil
}

// serveGCPercent is the garbage collector's target for mxguard serve. With
// Go's default (100) the collector ran every few dozen messages, as the live
// heap is small and each message allocates a little: at 64 sessions it took
// about a third of the daemon's CPU. At 200 it took a fraction of that; 400
// saves another 3-4% of the CPU per message (9% with 1 MB messages), for
// 7 MiB more at 64 sessions (24 MiB more with 1 MB messages, whose bodies
// are held in memory) and none with 1000 idle sessions
// (docs/performance.md). GOGC in the environment overrides it.
const serveGCPercent = 400

func tuneGC() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(serveGCPercent)
	}
}

// startCPUProfile profiles the daemon from now until stop is called (at
// shutdown), for docs/performance.md's "where the time goes". It is for
// developers, so it is an environment variable, not a setting.
func startCPUProfile(path string) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("MXGUARD_CPUPROFILE: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("MXGUARD_CPUPROFILE: %w", err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}
