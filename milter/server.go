package milter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/d--j/go-milter"

	"github.com/mxguard/mxguard/logstore"
	"github.com/mxguard/mxguard/policy"
)

// Store is where transaction rows go. Save returns once the row is
// committed; the milter answers the MTA only after that.
type Store interface {
	Save(ctx context.Context, r *logstore.Record) error
}

// Server runs milter sessions for the MTA.
type Server struct {
	engine *policy.Engine
	store  Store
	log    *slog.Logger
	milter *milter.Server

	active   atomic.Int64   // sessions open now, for milter.max_sessions
	sessions atomic.Uint64  // session ids for the debug log
	wg       sync.WaitGroup // sessions whose Cleanup has not run yet

	// base is the parent of every check's context; it is cancelled only
	// when a shutdown runs out of time.
	base       context.Context
	cancelBase context.CancelFunc
}

// saveTimeout bounds how long a session waits for its row to be committed.
const saveTimeout = 15 * time.Second

// readTimeout drops an MTA connection that has said nothing for this long;
// MTAs send an event per SMTP command, and time out idle clients well before.
const readTimeout = 10 * time.Minute

// macroRequests are the macros mxguard asks the MTA for at each stage. They
// override the MTA's own lists (milter_*_macros, confMILTER_MACROS_*), so the
// same set arrives from Postfix and Sendmail. The queue id (i) is asked for
// at every stage from MAIL on, because Postfix assigns it late (at RCPT or
// DATA, depending on version and smtpd_delay_open_until_valid_rcpt).
var macroRequests = map[milter.MacroStage][]milter.MacroName{
	milter.StageConnect: {milter.MacroMTAFQDN, milter.MacroDaemonName, milter.MacroIfName, milter.MacroIfAddr, milter.MacroClientName, milter.MacroClientPTR},
	milter.StageHelo:    {milter.MacroTlsVersion, milter.MacroCipher},
	milter.StageMail:    {milter.MacroQueueId, milter.MacroAuthType, milter.MacroAuthAuthen},
	milter.StageRcpt:    {milter.MacroQueueId},
	milter.StageData:    {milter.MacroQueueId},
	milter.StageEOH:     {milter.MacroQueueId},
	milter.StageEOM:     {milter.MacroQueueId},
}

// Actions are the modifications mxguard asks the MTA to allow.
const Actions = milter.OptAddHeader | milter.OptChangeHeader | milter.OptQuarantine

// Protocols are the protocol options mxguard negotiates: header values
// exactly as sent (DKIM needs them), no events for unknown SMTP commands,
// and no replies to HELO, DATA, header fields and body chunks, which
// mxguard always lets through (a header over the limits is refused at end
// of header): each reply is a round trip the MTA waits for, ten of them
// for a message with seven header fields. mxguard-bench's no-op baseline
// negotiates the same, so that ratios compare work, not protocol options.
const Protocols = milter.OptHeaderLeadingSpace | milter.OptNoUnknown |
	milter.OptNoHeloReply | milter.OptNoDataReply | milter.OptNoHeaderReply | milter.OptNoBodyReply

// MacroRequests returns the macros mxguard asks the MTA for at each stage
// (a copy), for tools that must ask for the same, like mxguard-bench's
// no-op baseline.
func MacroRequests() map[milter.MacroStage][]milter.MacroName {
	out := make(map[milter.MacroStage][]milter.MacroName, len(macroRequests))
	for st, names := range macroRequests {
		out[st] = slices.Clone(names)
	}
	return out
}

// NewServer returns a milter server deciding with engine and logging to store.
func NewServer(engine *policy.Engine, store Store, log *slog.Logger) *Server {
	s := &Server{engine: engine, store: store, log: log}
	s.base, s.cancelBase = context.WithCancel(context.Background())
	milter.LogWarning = func(format string, v ...any) {
		log.Warn("go-milter: " + fmt.Sprintf(format, v...))
	}
	opts := []milter.Option{
		milter.WithMilter(func() milter.Milter { return s.newSession() }),
		milter.WithActions(Actions),
		milter.WithProtocols(Protocols),
		milter.WithReadTimeout(readTimeout),
	}
	for st, names := range macroRequests {
		opts = append(opts, milter.WithMacroRequest(st, names))
	}
	s.milter = milter.NewServer(opts...)
	return s
}

// Serve accepts MTA connections on ln until Shutdown. Every connection is
// read through a frame guard.
func (s *Server) Serve(ln net.Listener) error {
	err := s.milter.Serve(guardListener{Listener: ln, log: s.log})
	if errors.Is(err, milter.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops accepting connections and waits for the open sessions to
// end until ctx is done; then it closes them (each logs its unfinished
// transaction as aborted) and cancels their checks.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.milter.Shutdown(ctx)
	s.cancelBase()
	// Sessions closed by force still write their rows in Cleanup.
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(saveTimeout):
		err = errors.Join(err, errors.New("milter: sessions did not clean up in time"))
	}
	return err
}

// Active returns the number of open sessions.
func (s *Server) Active() int64 { return s.active.Load() }
