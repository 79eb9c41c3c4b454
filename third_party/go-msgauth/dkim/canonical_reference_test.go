package dkim

// Upstream's body canonicalizers (go-msgauth v0.7.0, canonical.go), kept
// unchanged except for their names as the reference the rewrite in
// canonical.go is compared with.

import (
	"bytes"
	"io"
	"testing"
)

// refCRLFFixer fixes any lone LF without a preceding CR.
type refCRLFFixer struct {
	cr bool
}

func (cf *refCRLFFixer) Fix(b []byte) []byte {
	res := make([]byte, 0, len(b))
	for _, ch := range b {
		prevCR := cf.cr
		cf.cr = false
		switch ch {
		case '\r':
			cf.cr = true
		case '\n':
			if !prevCR {
				res = append(res, '\r')
			}
		}
		res = append(res, ch)
	}
	return res
}

type refSimpleBody struct {
	w            io.Writer
	crlfBuf      []byte
	refCRLFFixer refCRLFFixer
}

func (c *refSimpleBody) Write(b []byte) (int, error) {
	written := len(b)
	b = append(c.crlfBuf, b...)

	b = c.refCRLFFixer.Fix(b)

	end := len(b)
	// If it ends with \r, maybe the next write will begin with \n
	if end > 0 && b[end-1] == '\r' {
		end--
	}
	// Keep all \r\n sequences
	for end >= 2 {
		prev := b[end-2]
		cur := b[end-1]
		if prev != '\r' || cur != '\n' {
			break
		}
		end -= 2
	}

	c.crlfBuf = b[end:]

	var err error
	if end > 0 {
		_, err = c.w.Write(b[:end])
	}
	return written, err
}

func (c *refSimpleBody) Close() error {
	// Flush crlfBuf if it ends with a single \r (without a matching \n)
	if len(c.crlfBuf) > 0 && c.crlfBuf[len(c.crlfBuf)-1] == '\r' {
		if _, err := c.w.Write(c.crlfBuf); err != nil {
			return err
		}
	}
	c.crlfBuf = nil

	if _, err := c.w.Write([]byte(crlf)); err != nil {
		return err
	}
	return nil
}

type refRelaxedBody struct {
	w            io.Writer
	crlfBuf      []byte
	wsp          bool
	written      bool
	refCRLFFixer refCRLFFixer
}

func (c *refRelaxedBody) Write(b []byte) (int, error) {
	written := len(b)

	b = c.refCRLFFixer.Fix(b)

	canonical := make([]byte, 0, len(b))
	for _, ch := range b {
		if ch == ' ' || ch == '\t' {
			c.wsp = true
		} else if ch == '\r' || ch == '\n' {
			c.wsp = false
			c.crlfBuf = append(c.crlfBuf, ch)
		} else {
			if len(c.crlfBuf) > 0 {
				canonical = append(canonical, c.crlfBuf...)
				c.crlfBuf = c.crlfBuf[:0]
			}
			if c.wsp {
				canonical = append(canonical, ' ')
				c.wsp = false
			}

			canonical = append(canonical, ch)
		}
	}

	if !c.written && len(canonical) > 0 {
		c.written = true
	}

	_, err := c.w.Write(canonical)
	return written, err
}

func (c *refRelaxedBody) Close() error {
	if c.written {
		if _, err := c.w.Write([]byte(crlf)); err != nil {
			return err
		}
	}
	return nil
}

// FuzzBodyCanonicalizers feeds the same body, cut into writes at the same
// places, to upstream's canonicalizers and ours and wants the same bytes.
func FuzzBodyCanonicalizers(f *testing.F) {
	for _, s := range []string{
		"", "\r\n", "a", "a\r\n", "a \t b \r\n\r\n", "a\nb\n\n", "a\r\rb\r", "\r\n\r\n\r",
		" \t\r\n x\r\n", "Hey\r\n\r\nHow r u?\r\n\r\n\r\n", "a\r", "\n\n", "x  \r\n \r\n\ty\r\n",
		// Runs long enough for plainRun's eight bytes at a time.
		"Our support team answered nine out of ten tickets within a working day.\r\n",
		"abcdefg abcdefgh  abcdefg\x01abcdefgh\x7f\xff\xfeabcdefg \r\nabcdefghabcdefg\tabcdefgh ",
		"abcdefg \r\nabcdefgh \nabcdefghi  \r\n\r\n", "\xc3\xa9t\xc3\xa9 \xc3\xa9t\xc3\xa9 \x1fabcdefghij",
	} {
		f.Add(s, uint64(0))
		f.Add(s, uint64(0x0102030405060708))
	}
	f.Fuzz(func(t *testing.T, body string, cuts uint64) {
		for _, pair := range []struct {
			name      string
			ref, ours func(io.Writer) io.WriteCloser
		}{
			{"simple", func(w io.Writer) io.WriteCloser { return &refSimpleBody{w: w} }, new(simpleCanonicalizer).CanonicalizeBody},
			{"relaxed", func(w io.Writer) io.WriteCloser { return &refRelaxedBody{w: w} }, new(relaxedCanonicalizer).CanonicalizeBody},
		} {
			var want, got bytes.Buffer
			feed(t, pair.ref(&want), body, cuts)
			feed(t, pair.ours(&got), body, cuts)
			if !bytes.Equal(want.Bytes(), got.Bytes()) {
				t.Fatalf("%s(%q) in writes cut by %#x: got %q, upstream gives %q", pair.name, body, cuts, got.Bytes(), want.Bytes())
			}
		}
	})
}

// feed writes body to wc in pieces whose lengths come from the bytes of
// cuts (a zero length writes nothing, as io.Copy never does but a caller
// may), then closes it.
func feed(t *testing.T, wc io.WriteCloser, body string, cuts uint64) {
	b := []byte(body)
	for len(b) > 0 {
		n := len(b)
		if cuts != 0 {
			if c := int(cuts & 0xff); c < n {
				n = c
			}
			cuts >>= 8
		}
		if m, err := wc.Write(b[:n]); err != nil || m != n {
			t.Fatalf("Write(%d bytes) = %d, %v", n, m, err)
		}
		b = b[n:]
	}
	if err := wc.Close(); err != nil {
		t.Fatal(err)
	}
}

func BenchmarkRelaxedBody(b *testing.B) {
	for _, body := range []struct {
		name string
		line string
	}{
		{"text", "Our support team answered nine out of ten tickets within a working day.\r\n"},
		{"spaced", "Lorem ipsum dolor sit amet,  consectetur\tadipiscing elit. \r\n"},
	} {
		for _, c := range []struct {
			name string
			new  func(io.Writer) io.WriteCloser
		}{
			{"upstream", func(w io.Writer) io.WriteCloser { return &refRelaxedBody{w: w} }},
			{"ours", new(relaxedCanonicalizer).CanonicalizeBody},
		} {
			benchmarkBody(b, body.name+"/"+c.name, bytes.Repeat([]byte(body.line), 30<<10/len(body.line)), c.new)
		}
	}
}

func benchmarkBody(b *testing.B, name string, body []byte, newBody func(io.Writer) io.WriteCloser) {
	b.Run(name, func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		for i := 0; i < b.N; i++ {
			wc := newBody(io.Discard)
			wc.Write(body)
			wc.Close()
		}
	})
}
