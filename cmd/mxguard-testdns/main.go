// Command mxguard-testdns serves a DNS zone file on loopback, for "make demo"
// and manual trials: point mxguard's [dns] resolver at the address it
// prints, and SPF sees the records of the file instead of the internet's.
//
//	mxguard-testdns -zone demo.zone [-listen IP:PORT] [-addr-file PATH]
//
// The file is RFC 1035 master-file text, with the ";! servfail NAME" and
// ";! drop NAME" directives of internal/testdns. The server listens on a
// free port of 127.0.0.1 (UDP and TCP), or on -listen (e.g. 127.0.0.153:53,
// for programs whose stub resolver only talks to port 53: "make bench"),
// prints "IP:PORT" on standard output and runs until SIGINT or SIGTERM.
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/mxguard/mxguard/internal/testdns"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("mxguard-testdns", flag.ContinueOnError)
	fs.SetOutput(stderr)
	zone := fs.String("zone", "", "the zone file to serve (required)")
	listen := fs.String("listen", "", "listen on this IP:PORT (UDP and TCP) instead of a free port of 127.0.0.1")
	addrFile := fs.String("addr-file", "", "also write the address to this file, once the server answers")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *zone == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "usage: mxguard-testdns -zone FILE [-listen IP:PORT] [-addr-file PATH]")
		return 2
	}
	// Subscribe before serving, so a signal sent right after the address
	// appears is never lost.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)

	srv, err := testdns.StartFileOn(*zone, *listen)
	if err != nil {
		fmt.Fprintln(stderr, "mxguard-testdns:", err)
		return 1
	}
	defer srv.Close()
	if *addrFile != "" {
		// Written whole, then renamed: a reader never sees half an address.
		tmp := *addrFile + ".tmp"
		if err := os.WriteFile(tmp, []byte(srv.Addr()+"\n"), 0o644); err != nil {
			fmt.Fprintln(stderr, "mxguard-testdns:", err)
			return 1
		}
		if err := os.Rename(tmp, *addrFile); err != nil {
			fmt.Fprintln(stderr, "mxguard-testdns:", err)
			return 1
		}
	}
	fmt.Fprintln(stdout, srv.Addr())
	<-sig
	return 0
}
