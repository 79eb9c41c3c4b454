package clamd

import (
	"io"
	"net"
	"os"

	"golang.org/x/sys/unix"
)

// messageFile copies r into a new file that lives only in memory
// (memfd_create) and returns it, for whoever receives its descriptor to
// read from its start. readErr is r's failure, err the file's.
func messageFile(r io.Reader) (f *os.File, readErr, err error) {
	fd, err := unix.MemfdCreate("mxguard-scan", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, nil, err
	}
	f = os.NewFile(uintptr(fd), "mxguard-scan")
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
