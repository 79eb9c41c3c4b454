package milter

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"sync"
)

// body keeps the message body as the MTA sends it: in memory up to a
// bound, then in a temporary file, so a 100 MB message costs disk, not
// memory. The file is unlinked as soon as it is created: nothing is left
// behind if mxguard dies. Readers share it through ReadAt, so concurrent
// checks each stream the body without a copy per check.
type body struct {
	dir   string // "" means os.TempDir()
	limit int    // bytes kept in memory before spilling

	mem  []byte
	file *os.File
	size int64
	err  error // the first write error: the body is incomplete
}

func (b *body) Write(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if b.file == nil && len(b.mem)+len(p) > b.limit {
		b.spill()
		if b.err != nil {
			return 0, b.err
		}
	}
	if b.file != nil {
		n, err := b.file.WriteAt(p, b.size)
		b.size += int64(n)
		if err != nil {
			b.err = fmt.Errorf("spooling the message body: %w", err)
		}
		return n, b.err
	}
	if b.mem == nil {
		b.mem = bodyBuffers.Get().([]byte)
	}
	b.mem = append(b.mem, p...)
	b.size += int64(len(p))
	return len(p), nil
}

// spill moves what is in memory to a new temporary file.
func (b *body) spill() {
	f, err := os.CreateTemp(b.dir, "mxguard-body-*")
	if err != nil {
		b.err = fmt.Errorf("spooling the message body: %w", err)
		return
	}
	os.Remove(f.Name())
	if _, err := f.WriteAt(b.mem, 0); err != nil {
		f.Close()
		b.err = fmt.Errorf("spooling the message body: %w", err)
		return
	}
	b.file, b.mem = f, nil
}

func (b *body) Size() int64 { return b.size }

func (b *body) Reader() io.Reader {
	if b.file != nil {
		return io.NewSectionReader(b.file, 0, b.size)
	}
	return bytes.NewReader(b.mem)
}

// reset empties the body for the next message, releasing its file and
// handing its buffer back to the pool: an idle session holds no body
// memory, and a new one reuses a buffer instead of growing its own.
func (b *body) reset() {
	if b.file != nil {
		b.file.Close()
	}
	b.file, b.err, b.size = nil, nil, 0
	if b.mem != nil {
		if cap(b.mem) <= maxPooledBody {
			bodyBuffers.Put(b.mem[:0])
		}
		b.mem = nil
	}
}

// abandon forgets the body without reusing its memory or closing its
// file, for a check that was cut off and may still be reading it; the
// garbage collector closes the file once that check lets go of it.
func (b *body) abandon() {
	b.mem, b.file, b.size = nil, nil, 0
}

// Pooled body buffers start at 32 KiB, and only those up to 64 KiB go
// back: a session waiting in DATA should hold about its body, not the
// largest body some earlier session needed.
const maxPooledBody = 64 << 10

var bodyBuffers = sync.Pool{New: func() any { return make([]byte, 0, 32<<10) }}
