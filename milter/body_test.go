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
