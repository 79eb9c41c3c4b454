// Command mxguard-bench is a load generator for milters: it plays the MTA
// side of the milter protocol as Postfix 3.7 does, one milter connection
// per SMTP session, and measures throughput, latency and the final actions,
// and with -pid the server's memory and CPU time.
//
//	mxguard-bench -addr inet:127.0.0.1:8894 -c 64 -d 10s -msg testdata/bench/newsletter-30k.eml
//	mxguard-bench -addr inet:127.0.0.1:8894 -idle 1000 -msg testdata/bench/newsletter-30k.eml -pid PID
//	mxguard-bench -addr inet:127.0.0.1:8894 -big 100MB -pid PID
//	mxguard-bench -noop -listen inet:127.0.0.1:0     # the baseline milter, until SIGINT/SIGTERM
//	mxguard-bench -write-eicar /tmp/eicar.eml        # a message with EICAR attached
//
// README.md describes the flags and what the figures mean.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/mxguard/mxguard/policy"
)

// defaultTimeout bounds each message unless -timeout says otherwise.
const defaultTimeout = 30 * time.Second

// defaultHold is how long -idle holds its sessions unless -d says otherwise.
const defaultHold = 5 * time.Second

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr, nil))
}

// sizeFlag is a size in bytes, with an optional unit: KB, MB, GB (binary
// multiples, as in mxguard's configuration).
type sizeFlag struct {
	n    int
	text string
}

func (s *sizeFlag) String() string { return s.text }

func (s *sizeFlag) Set(v string) error {
	num, mult := strings.ToUpper(strings.TrimSpace(v)), 1
	for _, u := range []struct {
		suffix string
		n      int
	}{{"KIB", 1 << 10}, {"MIB", 1 << 20}, {"GIB", 1 << 30}, {"KB", 1 << 10}, {"MB", 1 << 20}, {"GB", 1 << 30}, {"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"B", 1}} {
		if rest, ok := strings.CutSuffix(num, u.suffix); ok {
			num, mult = strings.TrimSpace(rest), u.n
			break
		}
	}
	n, err := strconv.Atoi(num)
	if err != nil || n <= 0 || n > (1<<40)/mult {
		return errors.New(`want a size such as 100MB, 512KB or a number of bytes`)
	}
	*s = sizeFlag{n: n * mult, text: v}
	return nil
}

// listFlag is a flag that may be given several times.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

// warmupFlag is a number of messages or a duration.
type warmupFlag struct {
	n int64
	d time.Duration
}

func (w *warmupFlag) String() string {
	if w.d > 0 {
		return w.d.String()
	}
	return strconv.FormatInt(w.n, 10)
}

func (w *warmupFlag) Set(v string) error {
	if n, err := strconv.ParseInt(v, 10, 64); err == nil && n >= 0 {
		*w = warmupFlag{n: n}
		return nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return errors.New("want a number of messages or a duration, e.g. 200 or 2s")
	}
	*w = warmupFlag{d: d}
	return nil
}

// run is the command; stop, when not nil, replaces SIGINT and SIGTERM for
// -noop (tests).
func run(args []string, stdout, stderr io.Writer, stop <-chan struct{}) int {
	fs := flag.NewFlagSet("mxguard-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		msgs, rcpts listFlag
		warmup      = warmupFlag{d: time.Second}
	)
	addr := fs.String("addr", "inet:127.0.0.1:8894", "the milter, in Postfix notation: inet:HOST:PORT or unix:/PATH")
	conc := fs.Int("c", 1, "concurrent SMTP sessions (milter connections)")
	count := fs.Int64("n", 1000, "messages to send (the default unless -d is given)")
	dur := fs.Duration("d", 0, "send for this long instead of -n messages")
	perConn := fs.Int("per-conn", 1, "messages per SMTP session (milter connection)")
	fs.Var(&msgs, "msg", "message file, CRLF or LF line ends (repeatable: round robin)")
	from := fs.String("from", "news@news.bench.test", "envelope sender")
	fs.Var(&rcpts, "rcpt", "envelope recipient (repeatable; default someone@bench.test)")
	clientIP := fs.String("client-ip", "192.0.2.10", "the SMTP client's address")
	clientName := fs.String("client-name", "mta.news.bench.test", `the SMTP client's verified name, "unknown" for none`)
	helo := fs.String("helo", "mta.news.bench.test", "the SMTP client's HELO name")
	auth := fs.String("auth", "", "SMTP AUTH login: sets {auth_authen} and {auth_type}=PLAIN")
	qidPre := fs.String("queue-id-prefix", "", "queue ids are this followed by 7 hex digits (default: 5 from the clock)")
	pid := fs.Int("pid", 0, "the server's process: report its memory (VmRSS) and CPU time")
	fs.Var(&warmup, "warmup", "messages or duration sent first and not measured")
	timeout := fs.Duration("timeout", defaultTimeout, "time limit per message, connecting included")
	jsonOut := fs.Bool("json", false, "print one JSON object instead of text")
	name := fs.String("name", "", "a label for the report (default: the message files' names)")
	noop := fs.Bool("noop", false, "serve the no-op milter (accepts everything) on -listen until SIGINT/SIGTERM")
	listen := fs.String("listen", "inet:127.0.0.1:0", "where -noop listens, in Postfix notation (port 0: a free one)")
	eicarPath := fs.String("write-eicar", "", "write a message with the EICAR test file attached to this file and exit")
	idleN := fs.Int("idle", 0, "hold this many sessions open at once in the middle of DATA, for -d (default 5s)")
	var big sizeFlag
	fs.Var(&big, "big", "send one generated message of this size, e.g. 100MB (a base64 attachment)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: mxguard-bench [-addr ADDR] [-c N] [-n N | -d DURATION] [-per-conn N] -msg FILE... [flags]")
		fmt.Fprintln(stderr, "       mxguard-bench [-addr ADDR] -idle N [-d DURATION] -msg FILE [flags]")
		fmt.Fprintln(stderr, "       mxguard-bench [-addr ADDR] -big SIZE [flags]")
		fmt.Fprintln(stderr, "       mxguard-bench -noop [-listen ADDR]")
		fmt.Fprintln(stderr, "       mxguard-bench -write-eicar FILE")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	usage := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "mxguard-bench: "+format+"\n", a...)
		return 2
	}
	if fs.NArg() > 0 {
		return usage("unexpected arguments: %q", fs.Args())
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })

	switch {
	case *eicarPath != "":
		if err := writeEicar(*eicarPath); err != nil {
			fmt.Fprintln(stderr, "mxguard-bench:", err)
			return 1
		}
		return 0
	case *noop:
		return serveNoop(*listen, stderr, stop)
	}

	// Flags that have no meaning in a mode are refused rather than ignored.
	modeFlags := func(mode string, not ...string) string {
		for _, f := range not {
			if set[f] {
				return fmt.Sprintf("-%s does not go with %s", f, mode)
			}
		}
		return ""
	}
	switch {
	case set["idle"] && set["big"]:
		return usage("-idle and -big exclude each other")
	case set["idle"]:
		if msg := modeFlags("-idle", "n", "c", "per-conn", "warmup"); msg != "" {
			return usage("%s", msg)
		}
		if *idleN < 1 || len(msgs) > 1 {
			return usage("-idle wants a positive number of sessions and one -msg")
		}
	case set["big"]:
		if msg := modeFlags("-big (one generated message)", "n", "c", "d", "per-conn", "warmup", "msg"); msg != "" {
			return usage("%s", msg)
		}
		*conc, *count, warmup = 1, 1, warmupFlag{}
	}
	if set["n"] && set["d"] {
		return usage("-n and -d exclude each other")
	}
	if set["d"] && *dur <= 0 {
		return usage("-d must be positive")
	}
	if *conc < 1 || *perConn < 1 || *count < 1 || *dur < 0 || *timeout <= 0 {
		return usage("-c, -per-conn, -n and -timeout must be positive")
	}
	if len(msgs) == 0 && !set["big"] {
		return usage("no message: give -msg FILE")
	}
	if len(rcpts) == 0 {
		rcpts = listFlag{"someone@bench.test"}
	}
	ip, err := netip.ParseAddr(*clientIP)
	if err != nil {
		return usage("-client-ip: %v", err)
	}
	network, address, err := policy.ParseListen(*addr)
	if err != nil {
		return usage("-addr: %v", err)
	}
	cfg := &config{
		mode:     "load",
		name:     *name,
		listen:   *addr,
		network:  network,
		addr:     address,
		sessions: *conc,
		perConn:  *perConn,
		count:    *count,
		duration: *dur,
		warmupN:  warmup.n,
		warmupD:  warmup.d,
		timeout:  *timeout,
		env: envelope{
			clientIP:   ip.Unmap(),
			clientName: *clientName,
			helo:       *helo,
			from:       *from,
			rcpts:      rcpts,
			authUser:   *auth,
		},
		qidPre: *qidPre,
		pid:    *pid,
	}
	if set["d"] && !set["idle"] {
		cfg.count = 0
	}
	if !set["queue-id-prefix"] {
		cfg.qidPre = fmt.Sprintf("%05X", time.Now().Unix()&0xfffff)
	}
	var names []string
	for _, path := range msgs {
		m, err := loadMessage(path)
		if err != nil {
			fmt.Fprintln(stderr, "mxguard-bench:", err)
			return 1
		}
		cfg.msgs = append(cfg.msgs, m)
		names = append(names, strings.TrimSuffix(filepath.Base(path), ".eml"))
	}
	if set["big"] {
		m, err := newBigMessage(big.n)
		if err != nil {
			return usage("%v", err)
		}
		cfg.mode = "big"
		cfg.msgs = []*message{m}
		names = []string{"big-" + big.text}
	}
	if cfg.name == "" {
		cfg.name = strings.Join(names, "+")
	}
	if set["idle"] {
		hold := defaultHold
		if set["d"] {
			hold = *dur
		}
		return idle(cfg, *idleN, hold, *jsonOut, stdout, stderr)
	}
	return bench(cfg, *jsonOut, stdout, stderr)
}

// bench runs the warmup, then the measured phase, and prints the report.
func bench(cfg *config, jsonOut bool, stdout, stderr io.Writer) int {
	lt := &loadTest{cfg: cfg}
	if cfg.warmupN > 0 || cfg.warmupD > 0 {
		lt.phase(cfg.warmupN, time.Now().Add(cfg.warmupD))
	}
	var smp *sampler
	if cfg.pid != 0 {
		every := sampleEvery
		if cfg.mode == "big" {
			every = sampleFast
		}
		var err error
		if smp, err = startSampler(cfg.pid, every); err != nil {
			fmt.Fprintln(stderr, "mxguard-bench: -pid:", err)
			return 1
		}
	}
	r := lt.phase(cfg.count, time.Now().Add(cfg.duration))
	rep := newReport(cfg, r)
	if smp != nil {
		if err := smp.finish(rep); err != nil {
			fmt.Fprintln(stderr, "mxguard-bench: -pid:", err)
		}
	}
	if jsonOut {
		enc := json.NewEncoder(stdout)
		if err := enc.Encode(rep); err != nil {
			fmt.Fprintln(stderr, "mxguard-bench:", err)
			return 1
		}
	} else {
		printReport(stdout, rep)
	}
	switch {
	case rep.Messages == 0:
		fmt.Fprintln(stderr, "mxguard-bench: no message was sent")
		return 1
	case rep.Errors == rep.Messages:
		fmt.Fprintln(stderr, "mxguard-bench: every message failed:", rep.FirstError)
		return 1
	}
	return 0
}

// printReport writes rep as a few aligned lines.
func printReport(w io.Writer, rep *report) {
	line := func(label, format string, a ...any) {
		fmt.Fprintf(w, "%-12s %s\n", label, fmt.Sprintf(format, a...))
	}
	line("name", "%s", rep.Name)
	line("milter", "%s: %d concurrent sessions, %d message(s) per connection", rep.Addr, rep.Concurrency, rep.PerConn)
	if rep.Mode == "big" {
		line("message", "generated, %d bytes", rep.SizeBytes)
	}
	line("messages", "%d in %.3f s, %d errors, %d connections", rep.Messages, rep.DurationS, rep.Errors, rep.Sessions)
	line("throughput", "%.1f msgs/s", rep.MsgsPerS)
	line("latency", "p50 %.3f ms   p99 %.3f ms   max %.3f ms", rep.P50Ms, rep.P99Ms, rep.MaxMs)
	var acts []string
	for _, a := range []string{actAccept, actReject, actTempfail, actDiscard, actQuarantine} {
		acts = append(acts, fmt.Sprintf("%s %d", a, rep.Actions[a]))
	}
	for a, n := range rep.Actions {
		switch a {
		case actAccept, actReject, actTempfail, actDiscard, actQuarantine:
		default:
			acts = append(acts, fmt.Sprintf("%s %d", a, n))
		}
	}
	line("actions", "%s", strings.Join(acts, "   "))
	if rep.RSSPeakMiB != nil {
		cpu := "n/a"
		if rep.CPUMsPer1000 != nil {
			cpu = fmt.Sprintf("%.1f ms", *rep.CPUMsPer1000)
		}
		line("server", "RSS %.1f MiB at start, %.1f MiB peak   CPU %s per 1000 messages", *rep.RSSStartMiB, *rep.RSSPeakMiB, cpu)
	}
	if rep.FirstError != "" {
		line("first error", "%s", rep.FirstError)
	}
}

// serveNoop serves the no-op milter until stop is closed, or SIGINT or
// SIGTERM arrive.
func serveNoop(listen string, stderr io.Writer, stop <-chan struct{}) int {
	// Subscribe before listening, so a signal sent right after the
	// address appears is never lost.
	sig := make(chan os.Signal, 1)
	if stop == nil {
		signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
		defer signal.Stop(sig)
	}
	s, err := startNoop(listen)
	if err != nil {
		fmt.Fprintln(stderr, "mxguard-bench:", err)
		return 1
	}
	fmt.Fprintln(stderr, "listening on", s.Addr())
	select {
	case <-sig:
	case <-stop:
	}
	if err := s.Close(); err != nil {
		fmt.Fprintln(stderr, "mxguard-bench:", err)
		return 1
	}
	return 0
}
