//go:build !linux

package main

import (
	"errors"
	"os"
)

// isTerminal reports whether f is a terminal (a character device).
func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// readNoEcho cannot turn echo off here: mxguard targets Linux. Give the
// password on standard input instead.
func readNoEcho(*os.File) (string, error) {
	return "", errors.New("reading a password from a terminal is supported on Linux only; pipe it to standard input")
}
