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
