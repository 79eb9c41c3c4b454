package milter

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

func TestBodySpillsToAnUnlinkedFile(t *testing.T) {
	dir := t.TempDir()
	b := &body{dir: dir, limit: 1024}
	want := bytes.Repeat([]byte("0123456789abcdef"), 1000) // 16000 bytes
	for i := 0; i < len(want); i += 700 {
		if _, err := b.Write(want[i:min(i+700, len(want))]); err != nil {
			t.Fatal(err)
		}
	}
	if b.file == nil || b.mem != nil {
		t.Fatal("a body over the limit stayed in memory")
	}
	if b.Size() != int64(len(want)) {
		t.Errorf("size %d", b.Size())
	}
	if names, _ := filepath.Glob(filepath.Join(dir, "*")); len(names) != 0 {
		t.Errorf("the spool file is visible: %v", names)
	}
	// Concurrent readers each see the whole body.
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got, err := io.ReadAll(b.Reader())
			if err != nil || !bytes.Equal(got, want) {
				t.Errorf("reader got %d bytes, %v", len(got), err)
			}
		}()
	}
	wg.Wait()
	f := b.file
	b.reset()
	if _, err := f.Stat(); err == nil {
		t.Error("reset left the spool file open")
	}
	if b.Size() != 0 || b.file != nil {
		t.Error("reset kept the body")
	}
}

func TestBodySmallStaysInMemory(t *testing.T) {
	b := &body{dir: "/nonexistent", limit: 1024}
	b.Write([]byte("hello\r\n"))
	got, _ := io.ReadAll(b.Reader())
	if string(got) != "hello\r\n" || b.file != nil || b.err != nil {
		t.Errorf("got %q, file %v, err %v", got, b.file, b.err)
	}
}

func TestBodySpoolFailureIsKept(t *testing.T) {
	b := &body{dir: filepath.Join(t.TempDir(), "missing"), limit: 4}
	if _, err := b.Write([]byte("more than four")); err == nil {
		t.Fatal("no error from a spool directory that does not exist")
	}
	if _, err := b.Write([]byte("x")); err == nil || b.err == nil {
		t.Error("the first error was forgotten")
	}
	b.reset()
	if b.err != nil {
		t.Error("reset kept the error")
	}
	if _, err := os.Stat(b.dir); err == nil {
		t.Error("the spool directory appeared")
	}
}

// TestBodyInChunks: a body of several chunks, written in pieces that cross
// chunk boundaries, reads back whole through Read and through WriteTo, by
// several readers at once; then it spills, chunks and all.
func TestBodyInChunks(t *testing.T) {
	b := &body{dir: t.TempDir(), limit: 5 * bodyChunk}
	want := make([]byte, 3*bodyChunk+123)
	for i := range want {
		want[i] = byte(i * 7)
	}
	for i := 0; i < len(want); i += 1000 {
		b.Write(want[i:min(i+1000, len(want))])
	}
	if b.file != nil || len(b.mem) != 4 {
		t.Fatalf("%d chunks in memory, file %v; want 4 and none", len(b.mem), b.file)
	}
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var got []byte
			if i%2 == 0 {
				var buf bytes.Buffer
				io.Copy(&buf, b.Reader()) // WriteTo
				got = buf.Bytes()
			} else {
				got, _ = io.ReadAll(struct{ io.Reader }{b.Reader()}) // Read alone
			}
			if !bytes.Equal(got, want) {
				t.Errorf("reader %d got %d bytes, want the %d written", i, len(got), len(want))
			}
		}()
	}
	wg.Wait()

	more := bytes.Repeat([]byte("x"), 2*bodyChunk)
	b.Write(more)
	if b.file == nil || b.mem != nil {
		t.Fatal("a body over the limit stayed in memory")
	}
	got, _ := io.ReadAll(b.Reader())
	if !bytes.Equal(got, append(want, more...)) {
		t.Errorf("after spilling: %d bytes read, want %d", len(got), len(want)+len(more))
	}
	b.reset()
}
