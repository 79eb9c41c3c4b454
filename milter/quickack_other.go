//go:build !linux

package milter

import "net"

// quickAck is a Linux socket option; elsewhere the delayed-ACK stall stays.
func quickAck(net.Conn) {}
