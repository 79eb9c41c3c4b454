package main

import (
	"encoding/json"
	"fmt"
	"io"
	"sync"
	"syscall"
	"time"
)

// openParallel bounds the sessions being opened at once by -idle.
const openParallel = 32

// idleReport is the outcome of -idle, as printed.
type idleReport struct {
	Mode             string   `json:"mode"` // "idle"
	Name             string   `json:"name"`
	Addr             string   `json:"addr"`
	Sessions         int      `json:"sessions"` // held open in DATA
	Errors           int      `json:"errors"`   // could not be opened that far
	ChunkBytes       int      `json:"chunk_bytes"`
	OpenS            float64  `json:"open_s"`
	HoldS            float64  `json:"hold_s"`
	RSSStartMiB      *float64 `json:"rss_start_mib"`
	RSSPeakMiB       *float64 `json:"rss_peak_mib"`
	RSSPerSessionKiB *float64 `json:"rss_per_session_kib"`
	FirstError       string   `json:"first_error"`
}

// idle opens n sessions and holds each in the middle of DATA for hold, all
// at once, as many slow clients would, while the server's memory is
// sampled; then it releases them. A session refused or failing on the way
// is an error.
func idle(cfg *config, n int, hold time.Duration, jsonOut bool, stdout, stderr io.Writer) int {
	if err := raiseNoFile(n); err != nil {
		fmt.Fprintln(stderr, "mxguard-bench: warning:", err)
	}
	var smp *sampler
	if cfg.pid != 0 {
		var err error
		if smp, err = startSampler(cfg.pid, sampleFast); err != nil {
			fmt.Fprintln(stderr, "mxguard-bench: -pid:", err)
			return 1
		}
	}
	msg := cfg.msgs[0]
	sessions := make([]*smtpSession, n)
	errs := make([]error, n)
	start := time.Now()
	var wg sync.WaitGroup
	sem := make(chan struct{}, openParallel)
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			sessions[i], errs[i] = openIdle(cfg, msg, i)
		})
	}
	wg.Wait()
	opened := time.Since(start)
	time.Sleep(hold)

	rep := &idleReport{Mode: "idle", Name: cfg.name, Addr: cfg.listen, OpenS: round(opened.Seconds(), 3), HoldS: round(hold.Seconds(), 3)}
	for chunk := range msg.bodyChunks() {
		rep.ChunkBytes = len(chunk)
		break
	}
	var rssStart, rssPeak int64
	if smp != nil {
		var err error
		if rssStart, rssPeak, _, err = smp.end(); err != nil {
			fmt.Fprintln(stderr, "mxguard-bench: -pid:", err)
		} else {
			start, peak := mib(rssStart), mib(rssPeak)
			rep.RSSStartMiB, rep.RSSPeakMiB = &start, &peak
		}
	}
	deadline := time.Now().Add(cfg.timeout)
	for i, s := range sessions {
		switch {
		case s != nil:
			rep.Sessions++
			s.release(deadline)
		case rep.Errors == 0:
			rep.FirstError = errs[i].Error()
			fallthrough
		default:
			rep.Errors++
		}
	}
	if rep.RSSPeakMiB != nil && rep.Sessions > 0 {
		per := round(float64(rssPeak-rssStart)/1024/float64(rep.Sessions), 1)
		rep.RSSPerSessionKiB = &per
	}

	if jsonOut {
		if err := json.NewEncoder(stdout).Encode(rep); err != nil {
			fmt.Fprintln(stderr, "mxguard-bench:", err)
			return 1
		}
	} else {
		printIdleReport(stdout, rep)
	}
	if rep.Sessions == 0 {
		fmt.Fprintln(stderr, "mxguard-bench: no session could be opened:", rep.FirstError)
		return 1
	}
	return 0
}

// openIdle opens session i and takes it to the middle of DATA.
func openIdle(cfg *config, msg *message, i int) (*smtpSession, error) {
	deadline := time.Now().Add(cfg.timeout)
	port := uint16(32768 + i%28232)
	s, action, err := openSession(cfg.network, cfg.addr, &cfg.env, port, deadline)
	switch {
	case err != nil:
		return nil, err
	case action != "":
		return nil, fmt.Errorf("the milter answered %s at connect or HELO", action)
	}
	qid := fmt.Sprintf("%s%07X", cfg.qidPre, i&0xfffffff)
	action, err = s.holdInData(&cfg.env, msg, qid, deadline)
	switch {
	case err != nil:
		return nil, err
	case action != "":
		s.close()
		return nil, fmt.Errorf("the milter answered %s before the end of DATA", action)
	}
	return s, nil
}

// raiseNoFile lifts the limit on open files to what n connections need.
// Go lifts the soft limit to the hard one at start; only root can lift the
// hard one.
func raiseNoFile(n int) error {
	need := uint64(n) + 64
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return err
	}
	if lim.Cur >= need {
		return nil
	}
	want := lim
	want.Cur, want.Max = need, max(lim.Max, need)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err != nil {
		return fmt.Errorf("%d sessions need %d open files, the limit is %d: %w", n, need, lim.Cur, err)
	}
	return nil
}

// printIdleReport writes rep as a few aligned lines.
func printIdleReport(w io.Writer, rep *idleReport) {
	line := func(label, format string, a ...any) {
		fmt.Fprintf(w, "%-12s %s\n", label, fmt.Sprintf(format, a...))
	}
	line("name", "%s", rep.Name)
	line("milter", "%s: sessions held in DATA for %.3f s, after a first body chunk of %d bytes", rep.Addr, rep.HoldS, rep.ChunkBytes)
	line("sessions", "%d open in %.3f s, %d errors", rep.Sessions, rep.OpenS, rep.Errors)
	if rep.RSSPeakMiB != nil {
		per := "n/a"
		if rep.RSSPerSessionKiB != nil {
			per = fmt.Sprintf("%.1f KiB", *rep.RSSPerSessionKiB)
		}
		line("server", "RSS %.1f MiB at start, %.1f MiB peak   %s per session", *rep.RSSStartMiB, *rep.RSSPeakMiB, per)
	}
	if rep.FirstError != "" {
		line("first error", "%s", rep.FirstError)
	}
}
