package main

import (
	"context"
	"net"
	"sync/atomic"
	"time"

	"github.com/d--j/go-milter"

	mxmilter "github.com/mxguard/mxguard/milter"
	"github.com/mxguard/mxguard/policy"
)

// noopMacros are the macros mxguard asks for, so that the no-op milter
// gets the same frames as mxguard does.
var noopMacros = mxmilter.MacroRequests()

// noopStats counts what the no-op milter saw, for the tests.
type noopStats struct {
	open      atomic.Int64 // connections open now
	peakOpen  atomic.Int64 // the most open at once
	messages  atomic.Int64 // ended (end of message)
	aborts    atomic.Int64
	bodyBytes atomic.Int64 // over every message
}

// noopMilter answers continue to every event and accept at end of
// message. Unlike go-milter's NoOpMilter it never answers skip: it takes
// every header and body chunk, as mxguard does, and throws them away,
// counting them.
type noopMilter struct {
	milter.NoOpMilter
	stats *noopStats
}

func newNoopMilter(stats *noopStats) milter.Milter {
	n := stats.open.Add(1)
	for {
		p := stats.peakOpen.Load()
		if n <= p || stats.peakOpen.CompareAndSwap(p, n) {
			break
		}
	}
	return noopMilter{stats: stats}
}

func (noopMilter) RcptTo(string, string, milter.Modifier) (*milter.Response, error) {
	return milter.RespContinue, nil
}

func (noopMilter) Header(string, string, milter.Modifier) (*milter.Response, error) {
	return milter.RespContinue, nil
}

func (n noopMilter) BodyChunk(chunk []byte, _ milter.Modifier) (*milter.Response, error) {
	n.stats.bodyBytes.Add(int64(len(chunk)))
	return milter.RespContinue, nil
}

func (n noopMilter) EndOfMessage(milter.Modifier) (*milter.Response, error) {
	n.stats.messages.Add(1)
	return milter.RespAccept, nil
}

func (n noopMilter) Abort(milter.Modifier) error {
	n.stats.aborts.Add(1)
	return nil
}

func (n noopMilter) Cleanup(milter.Modifier) { n.stats.open.Add(-1) }

// noopServer is the baseline: a milter that accepts everything, with the
// protocol options and macro requests of mxguard, so that what it costs
// is the protocol's own cost.
type noopServer struct {
	ln    net.Listener
	srv   *milter.Server
	stats noopStats
}

// startNoop listens on listen (Postfix notation) and serves the no-op
// milter.
func startNoop(listen string) (*noopServer, error) {
	network, addr, err := policy.ParseListen(listen)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen(network, addr)
	if err != nil {
		return nil, err
	}
	s := &noopServer{ln: ln}
	opts := []milter.Option{
		milter.WithMilter(func() milter.Milter { return newNoopMilter(&s.stats) }),
		milter.WithActions(mxmilter.Actions),
		milter.WithProtocols(mxmilter.Protocols),
	}
	for st, names := range noopMacros {
		opts = append(opts, milter.WithMacroRequest(st, names))
	}
	s.srv = milter.NewServer(opts...)
	go s.srv.Serve(ln)
	return s, nil
}

// Addr is the address the server listens on, in Postfix notation.
func (s *noopServer) Addr() string {
	a := s.ln.Addr()
	if a.Network() == "unix" {
		return "unix:" + a.String()
	}
	return "inet:" + a.String()
}

// Close stops the server: it stops accepting, lets sessions end for a
// second, then closes them.
func (s *noopServer) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := s.srv.Shutdown(ctx); err != nil {
		return s.srv.Close()
	}
	return nil
}
