package dkim_test

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"strings"

	"github.com/mxguard/mxguard/scanners/dkim"
	"github.com/mxguard/mxguard/scanners/resolver"
)

// Example signs a message and verifies it against the published record.
func Example() {
	seed := make([]byte, ed25519.SeedSize) // a fixed key, for the example only
	key := &dkim.Key{Domain: "example.com", Selector: "s2025", Signer: ed25519.NewKeyFromSeed(seed)}
	dns := &resolver.Fake{TXT: map[string][]string{
		dkim.RecordName(key.Selector, key.Domain): {dkim.Record(key.Signer.Public())},
	}}

	msg := "From: alice@example.com\r\nSubject: hi\r\n\r\nHello.\r\n"
	sig, err := dkim.Sign(key, strings.NewReader(msg))
	if err != nil {
		panic(err)
	}
	sigs, err := dkim.Verify(context.Background(), dns, strings.NewReader("DKIM-Signature: "+sig+"\r\n"+msg))
	if err != nil {
		panic(err)
	}
	for _, s := range sigs {
		fmt.Println(s.Domain, s.Selector, s.Algorithm, s.Result)
	}
	// Output:
	// example.com s2025 ed25519-sha256 pass
}

func ExampleRecordName() {
	fmt.Println(dkim.RecordName("s2025", "example.com"))
	// Output: s2025._domainkey.example.com
}
