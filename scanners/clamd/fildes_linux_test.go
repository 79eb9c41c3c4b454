package clamd

import (
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// Over a unix socket a message of known size is passed as a file (FILDES):
// what clamd receives is the commands, then one byte with a descriptor of
// a file holding the whole message, in memory up to maxInMemory bytes and
// in the temporary directory beyond, where it leaves nothing behind.
// Messages of unknown size are streamed.
func TestScanPassesFile(t *testing.T) {
	checkNoLeak(t)
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	got := make(chan received, 1)
	sock := filepath.Join(t.TempDir(), "clamd.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			got <- receiveFile(conn.(*net.UnixConn))
			conn.Write([]byte("1: fd[9]: OK\x00"))
			conn.Close()
		}
	}()
	defer func() { l.Close(); <-done }()

	c := &Client{Address: "unix:" + sock}
	defer c.Close()
	for _, tt := range []struct {
		name     string
		size     int
		inMemory bool
	}{
		{"small", 5000, true},
		{"at the limit", maxInMemory, true},
		{"large", maxInMemory + 1, false},
	} {
		head := "Subject: hello\r\n\r\n"
		msg := head + strings.Repeat("x", tt.size-len(head))
		if ev := c.Scan(t.Context(), strings.NewReader(msg), int64(len(msg))); ev.Result != Clean {
			t.Fatalf("%s: Scan = %+v, want Clean", tt.name, ev)
		}
		r := <-got
		if r.err != nil || r.cmds != "zIDSESSION\x00zFILDES\x00" || r.content != msg {
			t.Errorf("%s: clamd got commands %q and a file of %d bytes (%v); want the commands and the %d-byte message",
				tt.name, r.cmds, len(r.content), r.err, len(msg))
		}
		if memfd := strings.HasPrefix(r.path, "/memfd:"); memfd != tt.inMemory {
			t.Errorf("%s: the %d-byte message was passed in %s; want it in memory: %v", tt.name, len(msg), r.path, tt.inMemory)
		}
		if left, _ := os.ReadDir(tmp); len(left) != 0 {
			t.Errorf("%s: %d files left in the temporary directory", tt.name, len(left))
		}
	}
}

// received is what a fake clamd received for FILDES.
type received struct {
	cmds    string
	content string
	path    string // what the descriptor's link in /proc says it is
	err     error
}

// receiveFile reads what a client sends for FILDES on a new session: the
// commands, then the byte that carries the descriptor, and the file's
// content.
func receiveFile(conn *net.UnixConn) (r received) {
	cmds := make([]byte, len("zIDSESSION\x00zFILDES\x00"))
	if _, r.err = io.ReadFull(conn, cmds); r.err != nil {
		return r
	}
	r.cmds = string(cmds)
	b, oob := make([]byte, 1), make([]byte, syscall.CmsgSpace(4))
	_, oobn, _, _, err := conn.ReadMsgUnix(b, oob)
	if err != nil {
		r.err = err
		return r
	}
	msgs, err := syscall.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		r.err = err
		return r
	}
	fds, err := syscall.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		r.err = err
		return r
	}
	f := os.NewFile(uintptr(fds[0]), "passed")
	defer f.Close()
	r.path, _ = os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fds[0]))
	content, err := io.ReadAll(f)
	r.content, r.err = string(content), err
	return r
}
