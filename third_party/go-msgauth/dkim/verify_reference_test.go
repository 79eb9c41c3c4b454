package dkim

// Upstream's removeSignature and stripWhitespace (go-msgauth v0.7.0,
// verify.go) and its relaxed header canonicalization (canonical.go), kept
// as the references the rewrites are compared with.

import (
	"regexp"
	"strings"
	"testing"
	"unicode"
)

var refSigRegex = regexp.MustCompile(`(b\s*=)[^;]+`)

func refRemoveSignature(s string) string {
	return refSigRegex.ReplaceAllString(s, "$1")
}

func refRelaxedHeader(s string) string {
	k, v, ok := strings.Cut(s, ":")
	if !ok {
		return strings.TrimSpace(strings.ToLower(s)) + ":" + crlf
	}

	k = strings.TrimSpace(strings.ToLower(k))
	v = strings.Join(strings.FieldsFunc(v, func(r rune) bool {
		return r == ' ' || r == '\t' || r == '\n' || r == '\r'
	}), " ")
	return k + ":" + v + crlf
}

func refStripWhitespace(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsSpace(r) {
			return -1
		}
		return r
	}, s)
}

// FuzzHeaderFunctions wants the same result from upstream's and our
// removeSignature, stripWhitespace and relaxed header canonicalization.
func FuzzHeaderFunctions(f *testing.F) {
	for _, s := range []string{
		"", "b=", "b=;", "b=abc", "b =abc", "b\t\r\n =abc; bh=xyz", "bb=1", "b==;b=2", "xb=1;b=",
		"v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.org; s=s1;\r\n bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;\r\n b=dzdVyOfAKCdLXdJOc9G2q8LoXSlEniSbav+yuU4zGeeruD00lszZVoG4ZHRNiYzR\r\n",
		"b=a;b;b =;b\v=x", "\xc3b=\xff;", " b=\u00a0x ", "i=b=c; b=d",
		"Subject:  a \t b\r\n\tc  \r\n", "X-A:", "NoColon \r\n", " K\xc4 : \xff  v\u00a0w ", "To:\r\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := removeSignature(s), refRemoveSignature(s); got != want {
			t.Fatalf("removeSignature(%q) = %q, upstream gives %q", s, got, want)
		}
		if got, want := stripWhitespace(s), refStripWhitespace(s); got != want {
			t.Fatalf("stripWhitespace(%q) = %q, upstream gives %q", s, got, want)
		}
		if got, want := new(relaxedCanonicalizer).CanonicalizeHeader(s), refRelaxedHeader(s); got != want {
			t.Fatalf("relaxed CanonicalizeHeader(%q) = %q, upstream gives %q", s, got, want)
		}
	})
}
