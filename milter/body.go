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
// behind if mxguard dies. Each check gets its own reader over the same
// bytes, so concurrent checks stream the body without a copy per check.
//
// In memory the body is a list of pooled fixed-size chunks rather than one
// slice: a slice grown to a megabyte by appending copies it again at
// every doubling and leaves each smaller copy behind as garbage.
type body struct {
	dir   string // "" means os.TempDir()
	limit int    // bytes kept in memory before spilling

	mem  [][]byte // full chunks, then the one being filled
	file *os.File
	size int64
	err  error // the first write error: the body is incomplete
}

// bodyChunk is the size of the pooled chunks a body is kept in: a body of
// one chunk (most mail) holds about its own size, as the pages of a chunk
// that are never written are never touched.
const bodyChunk = 32 << 10

var bodyChunks = sync.Pool{New: func() any { return make([]byte, 0, bodyChunk) }}

func (b *body) Write(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if b.file == nil && b.size+int64(len(p)) > int64(b.limit) {
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
	n := len(p)
	for len(p) > 0 {
		last := len(b.mem) - 1
		if last < 0 || len(b.mem[last]) == cap(b.mem[last]) {
			b.mem = append(b.mem, bodyChunks.Get().([]byte))
			last++
		}
		k := min(cap(b.mem[last])-len(b.mem[last]), len(p))
		b.mem[last] = append(b.mem[last], p[:k]...)
		p = p[k:]
	}
	b.size += int64(n)
	return n, nil
}

// spill moves what is in memory to a new temporary file.
func (b *body) spill() {
	f, err := os.CreateTemp(b.dir, "mxguard-body-*")
	if err != nil {
		b.err = fmt.Errorf("spooling the message body: %w", err)
		return
	}
	os.Remove(f.Name())
	for _, c := range b.mem {
		if _, err := f.Write(c); err != nil {
			f.Close()
			b.err = fmt.Errorf("spooling the message body: %w", err)
			return
		}
	}
	b.file = f
	b.release()
}

func (b *body) Size() int64 { return b.size }

func (b *body) Reader() io.Reader {
	switch {
	case b.file != nil:
		return io.NewSectionReader(b.file, 0, b.size)
	case len(b.mem) == 1:
		return bytes.NewReader(b.mem[0])
	default:
		return &chunkReader{chunks: b.mem}
	}
}

// reset empties the body for the next message, releasing its file and
// handing its chunks back to the pool: an idle session holds no body
// memory.
func (b *body) reset() {
	if b.file != nil {
		b.file.Close()
	}
	b.file, b.err, b.size = nil, nil, 0
	b.release()
}

func (b *body) release() {
	for _, c := range b.mem {
		bodyChunks.Put(c[:0])
	}
	b.mem = nil
}

// abandon forgets the body without reusing its memory or closing its
// file, for a check that was cut off and may still be reading it; the
// garbage collector closes the file once that check lets go of it.
func (b *body) abandon() {
	b.mem, b.file, b.size = nil, nil, 0
}

// chunkReader reads a body kept in chunks. It never writes to the chunk
// list, which other readers share.
type chunkReader struct {
	chunks [][]byte
	i, off int // the next byte is chunks[i][off]
}

func (r *chunkReader) Read(p []byte) (int, error) {
	for r.i < len(r.chunks) && r.off == len(r.chunks[r.i]) {
		r.i, r.off = r.i+1, 0
	}
	if r.i == len(r.chunks) {
		return 0, io.EOF
	}
	n := copy(p, r.chunks[r.i][r.off:])
	r.off += n
	return n, nil
}

// WriteTo hands w the chunks themselves, so io.Copy needs no buffer.
func (r *chunkReader) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for ; r.i < len(r.chunks); r.i, r.off = r.i+1, 0 {
		n, err := w.Write(r.chunks[r.i][r.off:])
		total += int64(n)
		if err != nil {
			r.off += n
			return total, err
		}
	}
	return total, nil
}
