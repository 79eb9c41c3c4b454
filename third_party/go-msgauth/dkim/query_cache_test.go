package dkim

import (
	"fmt"
	"testing"
)

// TestKeyCache: the same record is parsed once; another record, a changed
// one or a broken one is not served from the cache.
func TestKeyCache(t *testing.T) {
	records := map[string]string{
		"a._domainkey.example.org": dnsPublicKey,
		"b._domainkey.example.org": dnsEd25519PublicKey,
		"r._domainkey.example.org": "v=DKIM1; p=",
	}
	lookup := func(name string) ([]string, error) { return []string{records[name]}, nil }

	first, err := queryDNSTXT("example.org", "a", lookup)
	if err != nil {
		t.Fatal(err)
	}
	again, err := queryDNSTXT("example.org", "a", lookup)
	if err != nil || again != first {
		t.Errorf("the same record: %p, %v; want the cached %p", again, err, first)
	}
	other, err := queryDNSTXT("example.org", "b", lookup)
	if err != nil || other == first || other.KeyAlgo != "ed25519" {
		t.Errorf("another record: %+v, %v", other, err)
	}
	records["a._domainkey.example.org"] = dnsRawRSAPublicKey
	changed, err := queryDNSTXT("example.org", "a", lookup)
	if err != nil || changed == first {
		t.Errorf("a changed record: %p, %v; want a new parse", changed, err)
	}
	for i := 0; i < 2; i++ {
		if _, err := queryDNSTXT("example.org", "r", lookup); err == nil || !IsPermFail(err) {
			t.Errorf("a revoked key: %v, want a permanent failure every time", err)
		}
	}
}

func TestKeyCacheIsBounded(t *testing.T) {
	for i := 0; i < maxCachedKeys+10; i++ {
		// Each record differs by a tag the parser ignores.
		if _, err := cachedPublicKey(fmt.Sprintf("%s; n=%d", dnsEd25519PublicKey, i)); err != nil {
			t.Fatal(err)
		}
		keyCache.Lock()
		n := len(keyCache.keys)
		keyCache.Unlock()
		if n > maxCachedKeys {
			t.Fatalf("%d keys cached, the bound is %d", n, maxCachedKeys)
		}
	}
}
