package main

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// userHZ is the unit of the CPU times in /proc/PID/stat (USER_HZ, 100 on
// every Linux architecture Go supports).
const userHZ = 100

// sampleEvery is how often the server's memory is sampled for its peak
// during a load test; sampleFast during one big message or while sessions
// are opened, when the peak may be brief.
const (
	sampleEvery = 100 * time.Millisecond
	sampleFast  = 10 * time.Millisecond
)

// rss returns the resident set size of process pid, from the VmRSS line
// of /proc/PID/status.
func rss(pid int) (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(data)) {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("/proc/%d/status: VmRSS %q", pid, strings.TrimSpace(v))
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("/proc/%d/status: no VmRSS (a kernel thread, or a zombie?)", pid)
}

// cpuTime returns the CPU time process pid has used, user and system:
// fields 14 and 15 (utime, stime) of /proc/PID/stat.
func cpuTime(pid int) (time.Duration, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name, field 2, is in parentheses and may hold anything.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(data[i+1:])) // from field 3 on
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f)+2)
	}
	var ticks int64
	for _, s := range f[11:13] {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / userHZ, nil
}

// sampler watches the server's process during the measured phase: its
// memory every so often and at both ends, its CPU time at both ends.
type sampler struct {
	pid      int
	every    time.Duration
	rssStart int64
	cpuStart time.Duration

	mu   sync.Mutex
	peak int64
	err  error

	quit chan struct{}
	done chan struct{}
}

func startSampler(pid int, every time.Duration) (*sampler, error) {
	s := &sampler{pid: pid, every: every, quit: make(chan struct{}), done: make(chan struct{})}
	var err error
	if s.rssStart, err = rss(pid); err != nil {
		return nil, err
	}
	if s.cpuStart, err = cpuTime(pid); err != nil {
		return nil, err
	}
	s.peak = s.rssStart
	go s.run()
	return s, nil
}

func (s *sampler) run() {
	defer close(s.done)
	t := time.NewTicker(s.every)
	defer t.Stop()
	for {
		select {
		case <-s.quit:
			return
		case <-t.C:
			s.sample()
		}
	}
}

func (s *sampler) sample() {
	n, err := rss(s.pid)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		if s.err == nil {
			s.err = err
		}
		return
	}
	s.peak = max(s.peak, n)
}

// end stops sampling, takes a last sample, and returns the resident
// memory at the start and its peak, and the CPU time used since the start.
func (s *sampler) end() (rssStart, rssPeak int64, cpu time.Duration, err error) {
	close(s.quit)
	<-s.done
	s.sample()
	cpu, err = cpuTime(s.pid)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err == nil {
		err = s.err
	}
	return s.rssStart, s.peak, cpu - s.cpuStart, err
}

// finish stops sampling and fills in rep's server figures for the
// messages of the phase.
func (s *sampler) finish(rep *report) error {
	rssStart, rssPeak, cpu, err := s.end()
	if err != nil {
		return err
	}
	start, peak := mib(rssStart), mib(rssPeak)
	rep.RSSStartMiB, rep.RSSPeakMiB = &start, &peak
	if rep.Messages > 0 {
		per := round(float64(cpu)/float64(time.Millisecond)*1000/float64(rep.Messages), 1)
		rep.CPUMsPer1000 = &per
	}
	return nil
}

func mib(b int64) float64 { return round(float64(b)/(1<<20), 1) }
