package resolver_test

import (
	"context"
	"fmt"
	"net"
	"time"

	"blitiri.com.ar/go/spf"
	"github.com/mxguard/mxguard/internal/testdns"
	"github.com/mxguard/mxguard/scanners/resolver"
)

func Example() {
	srv, err := testdns.Start(`example.com. 300 TXT "v=spf1 " "-all"`)
	if err != nil {
		panic(err)
	}
	defer srv.Close()

	r, err := resolver.New(resolver.Config{Server: srv.Addr(), Timeout: time.Second})
	if err != nil {
		panic(err)
	}
	fmt.Println(r.LookupTXT(context.Background(), "example.com"))
	_, err = r.LookupTXT(context.Background(), "nx.example.com")
	derr := err.(*net.DNSError)
	fmt.Println(derr.Name, derr.Err, derr.IsNotFound)
	// Output:
	// [v=spf1 -all] <nil>
	// nx.example.com no such host true
}

func ExampleFake() {
	f := &resolver.Fake{
		TXT:    map[string][]string{"example.com": {"v=spf1 ip4:192.0.2.0/24 -all"}},
		Errors: map[string]error{"broken.example": resolver.ServFail("broken.example")},
	}
	for _, domain := range []string{"example.com", "broken.example", "nx.example"} {
		res, _ := spf.CheckHostWithSender(net.ParseIP("192.0.2.1"), "helo.example", "user@"+domain, spf.WithResolver(f))
		fmt.Println(domain, res)
	}
	// Output:
	// example.com pass
	// broken.example temperror
	// nx.example none
}
