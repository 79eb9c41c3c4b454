package milter

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"

	"github.com/mxguard/mxguard/policy"
)

// Listen opens the listener [milter] listen names, in Postfix notation.
// For a unix socket it creates the directory if needed, replaces a stale
// socket file left by a previous run (never a live one, never another kind
// of file), and applies socket_mode and socket_group.
func Listen(cfg policy.MilterConfig) (net.Listener, error) {
	network, addr, err := policy.ParseListen(cfg.Listen)
	if err != nil {
		return nil, err
	}
	if network != "unix" {
		return net.Listen(network, addr)
	}
	if err := os.MkdirAll(filepath.Dir(addr), 0o755); err != nil {
		return nil, err
	}
	if err := removeStaleSocket(addr); err != nil {
		return nil, err
	}
	ln, err := net.Listen("unix", addr)
	if err != nil {
		return nil, err
	}
	mode, _ := strconv.ParseUint(cfg.SocketMode, 8, 32) // validated with the config
	if err := os.Chmod(addr, os.FileMode(mode)); err != nil {
		ln.Close()
		return nil, err
	}
	if cfg.SocketGroup != "" {
		gid, err := lookupGroup(cfg.SocketGroup)
		if err == nil {
			err = os.Chown(addr, -1, gid)
		}
		if err != nil {
			ln.Close()
			return nil, fmt.Errorf("milter.socket_group %q: %w", cfg.SocketGroup, err)
		}
	}
	return ln, nil
}

func removeStaleSocket(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("%s exists and is not a socket; not replacing it", path)
	}
	c, err := net.Dial("unix", path)
	if err == nil {
		c.Close()
		return fmt.Errorf("%s: another process is listening on it", path)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("%s: cannot tell whether it is stale: %w", path, err)
	}
	return os.Remove(path)
}

func lookupGroup(name string) (int, error) {
	if gid, err := strconv.Atoi(name); err == nil {
		return gid, nil
	}
	g, err := user.LookupGroup(name)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(g.Gid)
}
