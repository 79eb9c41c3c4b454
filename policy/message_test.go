package policy

import (
	"io"
	"strings"
	"sync"
	"testing"
)

type stringBody string

func (b stringBody) Size() int64       { return int64(len(b)) }
func (b stringBody) Reader() io.Reader { return strings.NewReader(string(b)) }

// TestRawForConcurrentChecks: the checks that read the message call Raw at
// once; each gets the whole message from its start, with the header's
// folded values in CRLF form.
func TestRawForConcurrentChecks(t *testing.T) {
	msg := &Message{
		Headers: []Header{{"From", " a@example.com"}, {"Subject", " long\n\tfolded"}},
		Body:    stringBody("Hello.\r\n"),
	}
	want := "From: a@example.com\r\nSubject: long\r\n\tfolded\r\n\r\nHello.\r\n"
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 2 {
				r, n := msg.Raw()
				got, err := io.ReadAll(r)
				if err != nil || string(got) != want || n != int64(len(want)) {
					t.Errorf("Raw = %q (%d bytes, %v), want %q (%d)", got, n, err, want, len(want))
				}
			}
		}()
	}
	wg.Wait()
	if r, _ := (&Message{Headers: msg.Headers}).Raw(); r == nil {
		t.Fatal("no reader for a message without a body")
	} else if got, _ := io.ReadAll(r); string(got) != "From: a@example.com\r\nSubject: long\r\n\tfolded\r\n\r\n" {
		t.Errorf("without a body: %q", got)
	}
}

// TestRawRewinds: an engine client that sends the message again (clamd's,
// when its session closed under it) reads it whole from its start, with
// or without a body; any other seek is refused.
func TestRawRewinds(t *testing.T) {
	headers := []Header{{"From", " a@example.com"}}
	for _, body := range []Body{stringBody("Hello.\r\n"), nil} {
		r, _ := (&Message{Headers: headers, Body: body}).Raw()
		first, _ := io.ReadAll(io.LimitReader(r, 9)) // part of the header
		sk, ok := r.(io.Seeker)
		if !ok {
			t.Fatalf("body %v: Raw's reader is no io.Seeker", body)
		}
		if n, err := sk.Seek(0, io.SeekStart); n != 0 || err != nil {
			t.Fatalf("body %v: Seek(0, start) = %d, %v", body, n, err)
		}
		whole, _ := io.ReadAll(r)
		want := "From: a@example.com\r\n\r\n"
		if body != nil {
			want += "Hello.\r\n"
		}
		if string(first) != want[:9] || string(whole) != want {
			t.Errorf("body %v: read %q, then after the rewind %q; want %q", body, first, whole, want)
		}
		if body != nil {
			if _, err := sk.Seek(3, io.SeekStart); err == nil {
				t.Error("Seek(3, start) did not fail")
			}
		}
	}
}
