package clamd

import (
	"io"
	"net"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// messageFile copies r, of size bytes, into a new file without a name and
// returns it, for whoever receives its descriptor to read from its start:
// up to maxInMemory bytes a file in memory (memfd_create), larger messages
// an unlinked file in the temporary directory (O_TMPFILE), whose pages the
// kernel may write out, so that many large messages scanned at once are
// not all held in RAM. readErr is r's failure, err the file's.
func messageFile(r io.Reader, size int64) (f *os.File, readErr, err error) {
	if size <= maxInMemory {
		fd, err := unix.MemfdCreate("mxguard-scan", unix.MFD_CLOEXEC)
		if err != nil {
			return nil, nil, err
		}
		f = os.NewFile(uintptr(fd), "mxguard-scan")
	} else if f, err = tempFile(); err != nil {
		return nil, nil, err
	}
	w := &fileWriter{f: f}
	if _, err := io.Copy(w, r); err != nil {
		f.Close()
		if w.err != nil {
			return nil, nil, w.err
		}
		return nil, err, nil
	}
	// The receiver shares the file's offset; clamd reads from the start
	// whatever it is, but a receiver that reads on should find it there.
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		f.Close()
		return nil, nil, err
	}
	return f, nil, nil
}

// tempFile opens a new file in the temporary directory that no name
// refers to, so nothing is left behind whatever happens to the process.
// Where the file system has no O_TMPFILE, it is created under a name and
// unlinked at once.
func tempFile() (*os.File, error) {
	dir := os.TempDir()
	fd, err := unix.Open(dir, unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
	if err == nil {
		return os.NewFile(uintptr(fd), filepath.Join(dir, "mxguard-scan")), nil
	}
	f, err := os.CreateTemp(dir, "mxguard-scan-*")
	if err != nil {
		return nil, err
	}
	if err := os.Remove(f.Name()); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// fileWriter writes to f and keeps f's error apart from the reader's.
type fileWriter struct {
	f   *os.File
	err error
}

func (w *fileWriter) Write(p []byte) (int, error) {
	n, err := w.f.Write(p)
	if err != nil {
		w.err = err
	}
	return n, err
}

// sendDescriptor sends f's descriptor on conn, with the one byte of data
// that must carry it.
func sendDescriptor(conn net.Conn, f *os.File) error {
	uc, ok := conn.(*net.UnixConn)
	if !ok {
		return errNoDescriptors
	}
	_, _, err := uc.WriteMsgUnix([]byte{0}, unix.UnixRights(int(f.Fd())), nil)
	return err
}

const noDescriptors = false
