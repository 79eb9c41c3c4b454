//go:build !linux

package clamd

import (
	"io"
	"net"
	"os"
)

// Outside Linux there is no memfd_create: messages are always streamed
// (passFile checks errNoDescriptors first).

func messageFile(io.Reader, int64) (*os.File, error, error) { return nil, nil, errNoDescriptors }

func sendDescriptor(net.Conn, *os.File) error { return errNoDescriptors }

const noDescriptors = true
