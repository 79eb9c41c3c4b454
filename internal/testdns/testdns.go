// Package testdns runs a small authoritative DNS server on loopback, so
// tests can resolve names from a zone written next to them instead of
// reaching the network (as chasquid's t-16-spf serves its zones locally).
//
// The data is RFC 1035 master-file text. Comment lines of the form
//
//	;! servfail NAME
//	;! drop NAME
//
// make every query for NAME fail with SERVFAIL, or go unanswered so the
// client times out. Standard zone parsers skip them as comments. NAME is
// absolute; the trailing dot is optional.
package testdns

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"

	"github.com/miekg/dns"
)

const (
	// defaultTTL applies to records without a TTL when the text has no
	// $TTL, so short test zones need not repeat one everywhere.
	defaultTTL = 3600

	// maxCNAMEs bounds CNAME chasing so a loop in the data ends.
	maxCNAMEs = 8

	// ednsSize is the UDP payload size we advertise, the DNS flag day
	// 2020 value.
	ednsSize = 1232
)

// Server is an authoritative DNS server listening on 127.0.0.1 (or the
// address given to StartOn) over UDP and TCP on the same port. It is safe
// for concurrent use.
type Server struct {
	addr string
	udp  *dns.Server
	tcp  *dns.Server

	mu      sync.Mutex
	data    *data
	queries map[question]int
}

type question struct {
	name  string
	qtype uint16
}

// data is one parsed zone text. Only servfail and drop change after
// parsing, under Server.mu; the rest is read without locking.
type data struct {
	rrs      map[string][]dns.RR // by lowercased owner name
	names    map[string]bool     // owners and their ancestors
	soas     []*dns.SOA
	servfail map[string]bool
	drop     map[string]bool
}

// Start parses zoneText and serves it on a random loopback port.
func Start(zoneText string) (*Server, error) {
	return start(zoneText, "", "")
}

// StartOn is Start on the given "IP:PORT", e.g. "127.0.0.153:53" for
// programs whose resolver only talks to port 53 (a stub resolver reading
// /etc/resolv.conf). Port 0 picks a free port.
func StartOn(zoneText, addr string) (*Server, error) {
	return start(zoneText, "", addr)
}

// StartFile is Start with the zone text read from path.
func StartFile(path string) (*Server, error) {
	return StartFileOn(path, "")
}

// StartFileOn is StartOn with the zone text read from path; an empty addr
// means a random port of 127.0.0.1.
func StartFileOn(path, addr string) (*Server, error) {
	text, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return start(string(text), path, addr)
}

func start(text, file, addr string) (*Server, error) {
	d, err := parse(text, file)
	if err != nil {
		return nil, err
	}
	var pc net.PacketConn
	var ln net.Listener
	if addr == "" {
		pc, ln, err = listen()
	} else {
		pc, ln, err = listenOn(addr)
	}
	if err != nil {
		return nil, err
	}
	s := &Server{
		addr:    pc.LocalAddr().String(),
		data:    d,
		queries: map[question]int{},
	}
	h := dns.HandlerFunc(s.serve)
	s.udp = &dns.Server{PacketConn: pc, Handler: h}
	s.tcp = &dns.Server{Listener: ln, Handler: h}
	if err := run(s.udp); err != nil {
		pc.Close()
		ln.Close()
		return nil, err
	}
	if err := run(s.tcp); err != nil {
		s.udp.Shutdown()
		ln.Close()
		return nil, err
	}
	return s, nil
}

// listen opens UDP and TCP sockets on one port. The kernel picks a free
// UDP port, which may already be taken for TCP, so try a few times.
func listen() (net.PacketConn, net.Listener, error) {
	var err error
	for range 10 {
		var pc net.PacketConn
		pc, err = net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return nil, nil, err
		}
		var ln net.Listener
		ln, err = net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			return pc, ln, nil
		}
		pc.Close()
	}
	return nil, nil, err
}

// listenOn opens UDP and TCP sockets on addr, "IP:PORT".
func listenOn(addr string) (net.PacketConn, net.Listener, error) {
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return nil, nil, fmt.Errorf("listen address %q: %w", addr, err)
	}
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return nil, nil, err
	}
	// Port 0: TCP takes the port the kernel gave UDP.
	ln, err := net.Listen("tcp", pc.LocalAddr().String())
	if err != nil {
		pc.Close()
		return nil, nil, err
	}
	return pc, ln, nil
}

// run starts srv and waits until it serves, so Close never races with the
// start (miekg's Shutdown fails on a server that has not started).
func run(srv *dns.Server) error {
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	errc := make(chan error, 1)
	go func() { errc <- srv.ActivateAndServe() }()
	select {
	case <-started:
		return nil
	case err := <-errc:
		return err
	}
}

// Addr returns the "IP:PORT" address the server listens on.
func (s *Server) Addr() string { return s.addr }

// Close stops the server.
func (s *Server) Close() error {
	return errors.Join(s.udp.Shutdown(), s.tcp.Shutdown())
}

// Set replaces the records and the failure directives with those of
// zoneText. Query counts are kept.
func (s *Server) Set(zoneText string) error {
	d, err := parse(zoneText, "")
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.data = d
	s.mu.Unlock()
	return nil
}

// SetServFail makes every query for name fail with SERVFAIL.
func (s *Server) SetServFail(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.data.servfail[canonical(name)] = true
}

// SetDrop makes every query for name go unanswered.
func (s *Server) SetDrop(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.data.drop[canonical(name)] = true
}

// Clear removes the failures set for name, by API or directive.
func (s *Server) Clear(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.data.servfail, canonical(name))
	delete(s.data.drop, canonical(name))
}

// Queries returns how many queries for (name, qtype) the server received,
// over UDP and TCP, answered or not.
func (s *Server) Queries(name string, qtype uint16) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queries[question{canonical(name), qtype}]
}

func (s *Server) serve(w dns.ResponseWriter, req *dns.Msg) {
	m := new(dns.Msg)
	if len(req.Question) != 1 {
		m.SetRcode(req, dns.RcodeFormatError)
		w.WriteMsg(m)
		return
	}
	q := req.Question[0]
	name := canonical(q.Name)

	s.mu.Lock()
	s.queries[question{name, q.Qtype}]++
	d := s.data
	drop, servfail := d.drop[name], d.servfail[name]
	s.mu.Unlock()

	switch {
	case drop:
		return
	case servfail:
		m.SetRcode(req, dns.RcodeServerFailure)
	default:
		m.SetReply(req)
		m.Authoritative = true
		d.answer(m, name, q.Qtype)
	}

	// RFC 6891 6.1.1: answer an OPT with an OPT. Over UDP the answer must
	// fit the client's buffer, 512 bytes without EDNS (RFC 1035 4.2.1);
	// Truncate drops what does not fit and sets TC, so the client retries
	// over TCP.
	opt := req.IsEdns0()
	if opt != nil {
		m.SetEdns0(ednsSize, false)
	}
	if w.LocalAddr().Network() == "udp" {
		size := dns.MinMsgSize
		if opt != nil {
			size = int(opt.UDPSize())
		}
		m.Truncate(size)
	}
	w.WriteMsg(m)
}

// answer fills m with the records of qtype for name, following CNAMEs
// within our data (RFC 1034 4.3.2), or with a negative answer.
func (d *data) answer(m *dns.Msg, name string, qtype uint16) {
	for range maxCNAMEs {
		var cname *dns.CNAME
		n := len(m.Answer)
		for _, rr := range d.rrs[name] {
			if rr.Header().Rrtype == qtype {
				m.Answer = append(m.Answer, rr)
			} else if c, ok := rr.(*dns.CNAME); ok {
				cname = c
			}
		}
		if len(m.Answer) > n || cname == nil {
			break
		}
		m.Answer = append(m.Answer, cname)
		name = canonical(cname.Target)
	}
	if len(m.Answer) > 0 && m.Answer[len(m.Answer)-1].Header().Rrtype == qtype {
		return
	}

	// The rcode is about the last name of the chain (RFC 6604 3). A name
	// that owns no records but has some below it exists (RFC 8020), so
	// it gets NODATA, not NXDOMAIN.
	if !d.names[name] {
		m.Rcode = dns.RcodeNameError
	}
	// RFC 2308 3: the SOA of the zone goes in the authority section, with
	// the TTL the negative answer may be cached for.
	if soa := d.soaFor(name); soa != nil {
		soa = dns.Copy(soa).(*dns.SOA)
		soa.Hdr.Ttl = min(soa.Hdr.Ttl, soa.Minttl)
		m.Ns = append(m.Ns, soa)
	}
}

// soaFor returns the SOA of the closest zone enclosing name, or nil.
func (d *data) soaFor(name string) *dns.SOA {
	var best *dns.SOA
	for _, soa := range d.soas {
		if dns.IsSubDomain(soa.Hdr.Name, name) &&
			(best == nil || dns.CountLabel(soa.Hdr.Name) > dns.CountLabel(best.Hdr.Name)) {
			best = soa
		}
	}
	return best
}

func parse(text, file string) (*data, error) {
	d := &data{
		rrs:      map[string][]dns.RR{},
		names:    map[string]bool{},
		servfail: map[string]bool{},
		drop:     map[string]bool{},
	}
	zp := dns.NewZoneParser(strings.NewReader(text), ".", file)
	zp.SetDefaultTTL(defaultTTL)
	for rr, ok := zp.Next(); ok; rr, ok = zp.Next() {
		owner := canonical(rr.Header().Name)
		d.rrs[owner] = append(d.rrs[owner], rr)
		for i, end := 0, false; !end; i, end = dns.NextLabel(owner, i) {
			d.names[owner[i:]] = true
		}
		if soa, ok := rr.(*dns.SOA); ok {
			d.soas = append(d.soas, soa)
		}
	}
	if err := zp.Err(); err != nil {
		return nil, err
	}
	if err := d.directives(text, file); err != nil {
		return nil, err
	}
	return d, nil
}

// directives reads the ";! VERB NAME" lines of text.
func (d *data) directives(text, file string) error {
	sc := bufio.NewScanner(strings.NewReader(text))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if !strings.HasPrefix(line, ";!") {
			continue
		}
		f := strings.Fields(strings.TrimPrefix(line, ";!"))
		if len(f) != 2 {
			return fmt.Errorf("%s:%d: want \";! VERB NAME\", got %q", file, n, line)
		}
		switch f[0] {
		case "servfail":
			d.servfail[canonical(f[1])] = true
		case "drop":
			d.drop[canonical(f[1])] = true
		default:
			return fmt.Errorf("%s:%d: unknown directive %q", file, n, f[0])
		}
	}
	return sc.Err()
}

// canonical lowercases name and makes it absolute; DNS names compare
// case-insensitively (RFC 4343).
func canonical(name string) string {
	return dns.Fqdn(strings.ToLower(name))
}
