package milter

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/d--j/go-milter"

	"github.com/mxguard/mxguard/internal/testdns"
	"github.com/mxguard/mxguard/logstore"
	"github.com/mxguard/mxguard/policy"
	"github.com/mxguard/mxguard/scanners/dkim"
	"github.com/mxguard/mxguard/scanners/resolver"
	"github.com/mxguard/mxguard/scanners/spf"
)

// benchMessage is a DKIM-signed newsletter of about 30 KB from a domain
// with SPF, DKIM and DMARC records, and the zone that publishes them.
func benchMessage(b *testing.B) (headers [][2]string, body, zone string) {
	b.Helper()
	pemBytes, txt, err := dkim.GenerateKey("ed25519", 0)
	if err != nil {
		b.Fatal(err)
	}
	path := filepath.Join(b.TempDir(), "k.pem")
	if err := writeFile(path, pemBytes); err != nil {
		b.Fatal(err)
	}
	key, err := dkim.LoadKey("news.bench.test", "b1", path)
	if err != nil {
		b.Fatal(err)
	}
	var sb strings.Builder
	for sb.Len() < 30000 {
		sb.WriteString("<p>This week's news: a line of newsletter text that goes on for a while.</p>\r\n")
	}
	body = sb.String()
	headers = [][2]string{
		{"From", " News <news@news.bench.test>"}, {"To", " someone@bench.test"}, {"Subject", " Weekly news"},
		{"Date", " Mon, 23 Nov 2026 06:00:00 +0000"}, {"Message-ID", " <n1@news.bench.test>"},
		{"MIME-Version", " 1.0"}, {"Content-Type", " text/html; charset=utf-8"},
	}
	var raw strings.Builder
	for _, h := range headers {
		raw.WriteString(h[0] + ":" + h[1] + "\r\n")
	}
	raw.WriteString("\r\n" + body)
	sig, err := dkim.Sign(key, strings.NewReader(raw.String()))
	if err != nil {
		b.Fatal(err)
	}
	headers = append([][2]string{{"DKIM-Signature", " " + sig}}, headers...)
	zone = fmt.Sprintf(`$TTL 3600
news.bench.test. IN TXT "v=spf1 ip4:192.0.2.10 -all"
%s. IN TXT %q
_dmarc.news.bench.test. IN TXT "v=DMARC1; p=reject"
`, dkim.RecordName("b1", "news.bench.test"), txt)
	return headers, body, zone
}

// BenchmarkMessage is one inbound message through the whole daemon as
// Postfix drives it, one milter connection per message: SPF, relay
// control, DKIM, DMARC, attachment rules and the committed log row, over
// loopback TCP. Run with -cpuprofile to see where the time goes.
func BenchmarkMessage(b *testing.B) {
	headers, body, zone := benchMessage(b)
	dns, err := testdns.Start(zone)
	if err != nil {
		b.Fatal(err)
	}
	defer dns.Close()
	cfg, err := policy.Parse("bench", []byte(fmt.Sprintf(`hostname = "mx.bench.test"
[dns]
resolver = %q
[[organization]]
name = "bench"
domains = ["bench.test"]
`, dns.Addr())))
	if err != nil {
		b.Fatal(err)
	}
	res, err := resolver.New(resolver.Config{Server: dns.Addr(), Timeout: time.Second, CacheSize: 1000})
	if err != nil {
		b.Fatal(err)
	}
	store, err := logstore.Open(logstore.Options{Path: filepath.Join(b.TempDir(), "log.db")})
	if err != nil {
		b.Fatal(err)
	}
	defer store.Close()
	engine := policy.NewEngine(cfg, &spf.Checker{Resolver: res})
	engine.UseDNS(res)
	srv := NewServer(engine, store, slog.New(slog.NewTextHandler(io.Discard, nil)))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go srv.Serve(ln)
	defer srv.Shutdown(context.Background())
	runSessions(b, ln.Addr().String(), headers, body)
}

func writeFile(path string, data []byte) error { return os.WriteFile(path, data, 0o600) }

// noopMilter accepts everything: the protocol's own cost, the baseline
// BenchmarkMessage is compared with.
type noopMilter struct{ milter.NoOpMilter }

func (noopMilter) EndOfMessage(m milter.Modifier) (*milter.Response, error) {
	return milter.RespAccept, nil
}

// BenchmarkNoop is BenchmarkMessage against a milter that accepts
// everything: the protocol's own cost on this machine, for the ratio.
func BenchmarkNoop(b *testing.B) {
	headers, body, _ := benchMessage(b)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := milter.NewServer(milter.WithMilter(func() milter.Milter { return noopMilter{} }),
		milter.WithActions(Actions), milter.WithProtocols(Protocols))
	go srv.Serve(ln)
	defer srv.Shutdown(context.Background())
	runSessions(b, ln.Addr().String(), headers, body)
}

// runSessions sends the message to the milter at addr, one milter
// connection per message as Postfix does, at 1, 8 and 64 concurrent
// sessions.
func runSessions(b *testing.B, addr string, headers [][2]string, body string) {
	client := milter.NewClient("tcp", addr, milter.WithAction(milter.AllClientSupportedActionMasks))

	one := func(i int) error {
		macros := milter.NewMacroBag()
		macros.Set(milter.MacroMTAFQDN, "mx.bench.test")
		macros.Set(milter.MacroDaemonName, "smtpd")
		s, err := client.Session(macros)
		if err != nil {
			return err
		}
		defer s.Close()
		if _, err := s.Conn("mail.news.bench.test", milter.FamilyInet, 40000, "192.0.2.10"); err != nil {
			return err
		}
		if _, err := s.Helo("mail.news.bench.test"); err != nil {
			return err
		}
		if _, err := s.Mail("news@news.bench.test", ""); err != nil {
			return err
		}
		if _, err := s.Rcpt("someone@bench.test", ""); err != nil {
			return err
		}
		macros.Set(milter.MacroQueueId, fmt.Sprintf("Q%d", i))
		if _, err := s.DataStart(); err != nil {
			return err
		}
		for _, h := range headers {
			if _, err := s.HeaderField(h[0], h[1], nil); err != nil {
				return err
			}
		}
		if _, err := s.HeaderEnd(); err != nil {
			return err
		}
		_, act, err := s.BodyReadFrom(strings.NewReader(body))
		if err != nil {
			return err
		}
		if act.Type != milter.ActionAccept {
			return fmt.Errorf("message %d: %v %s", i, act.Type, act.SMTPReply)
		}
		return nil
	}
	if err := one(0); err != nil { // warms the DNS cache; checks the setup
		b.Fatal(err)
	}
	for _, c := range []int{1, 8, 64} {
		b.Run(fmt.Sprintf("sessions=%d", c), func(b *testing.B) {
			var wg sync.WaitGroup
			var mu sync.Mutex
			var first error
			next := make(chan int)
			for range c {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range next {
						if err := one(i); err != nil {
							mu.Lock()
							if first == nil {
								first = err
							}
							mu.Unlock()
						}
					}
				}()
			}
			b.ResetTimer()
			for i := range b.N {
				next <- i + 1
			}
			close(next)
			wg.Wait()
			b.StopTimer()
			if first != nil {
				b.Fatal(first)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}
