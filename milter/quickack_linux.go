package milter

import (
	"net"
	"syscall"
)

// quickAck makes the kernel acknowledge what it receives on c at once
// instead of after the delayed-ACK timer (up to 40 ms). Sendmail writes each
// milter command as two small packets (its macros, then the command) with
// Nagle on, so its second write waits for our ACK of the first: without
// this, every stage of every message stalls by the delayed-ACK time.
// Linux resets TCP_QUICKACK after ACKs go out, so it is set before each read.
func quickAck(c net.Conn) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return // unix sockets have no Nagle and no delayed ACK
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return
	}
	raw.Control(func(fd uintptr) {
		syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_QUICKACK, 1)
	})
}
