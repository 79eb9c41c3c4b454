package dmarc

import (
	"errors"
	"slices"
	"testing"
)

var fromCases = []struct {
	values  []string
	want    string // the domain, when no error
	wantErr error
}{
	{[]string{"alice@example.com"}, "example.com", nil},
	{[]string{" Alice <alice@Example.COM> "}, "example.com", nil},
	{[]string{`"Smith, Alice" <alice@mail.example.com>`}, "mail.example.com", nil},
	{[]string{"alice@example.com."}, "", ErrBadFrom},
	{[]string{"=?x-unknown?q?Al=E9?= <a@example.com>"}, "example.com", nil},
	{[]string{"=?utf-8?q?Al=C3=A9?=\r\n <a@example.com>"}, "example.com", nil},
	{[]string{"Team: a@example.com;"}, "example.com", nil},
	{[]string{"a@example.com (comment)"}, "example.com", nil},
	{nil, "", ErrNoFrom},
	{[]string{"a@example.com", "b@example.net"}, "", ErrMultipleFrom},
	{[]string{"a@example.com", "a@example.com"}, "", ErrMultipleFrom},
	{[]string{"a@example.com, b@example.net"}, "", ErrMultipleAddresses},
	{[]string{"Team: a@example.com, b@example.com;"}, "", ErrMultipleAddresses},
	{[]string{""}, "", ErrBadFrom},
	{[]string{"   "}, "", ErrBadFrom},
	{[]string{"not an address"}, "", ErrBadFrom},
	{[]string{"alice"}, "", ErrBadFrom},
	{[]string{"<>"}, "", ErrBadFrom},
	{[]string{"undisclosed-recipients:;"}, "", ErrBadFrom},
	{[]string{"a@[192.0.2.1]"}, "", ErrBadFrom},
	{[]string{"a@example..com"}, "", ErrBadFrom},
}

func TestFromDomains(t *testing.T) {
	for _, c := range fromCases {
		got, err := FromDomains(c.values)
		switch {
		case c.wantErr != nil:
			if !errors.Is(err, c.wantErr) {
				t.Errorf("FromDomains(%q) = %q, %v; want error %v", c.values, got, err, c.wantErr)
			}
		case err != nil || !slices.Equal(got, []string{c.want}):
			t.Errorf("FromDomains(%q) = %q, %v; want %q", c.values, got, err, c.want)
		}
	}
}

func FuzzFromDomains(f *testing.F) {
	for _, c := range fromCases {
		if len(c.values) == 1 {
			f.Add(c.values[0])
		}
	}
	f.Fuzz(func(t *testing.T, value string) {
		got, err := FromDomains([]string{value})
		if err != nil {
			if !errors.Is(err, ErrBadFrom) && !errors.Is(err, ErrMultipleAddresses) {
				t.Errorf("unexpected error kind: %v", err)
			}
			return
		}
		if len(got) != 1 || !validDomain(got[0]) || got[0] != normalize(got[0]) {
			t.Errorf("FromDomains(%q) = %q", value, got)
		}
	})
}
