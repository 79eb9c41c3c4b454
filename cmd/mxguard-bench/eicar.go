package main

import (
	"encoding/base64"
	"os"
	"strings"
)

// eicar is the EICAR anti-virus test file, put together here so that no
// file of the repository holds it whole (scanners would flag the file).
func eicar() string {
	return `X5O!P%@AP[4\PZX54(P^)7CC)7}$` + "EICAR-STANDARD-ANTIVIRUS-" + "TEST-FILE!$H+H*"
}

// eicarMessage is a message from the benchmark's sender with EICAR as a
// base64 attachment, for the virus engine's share of the cost.
func eicarMessage() string {
	lines := []string{
		"From: Bench News <news@news.bench.test>",
		"To: Someone <someone@bench.test>",
		"Subject: The file you asked for",
		"Date: Mon, 23 Nov 2026 06:00:00 +0000",
		"Message-ID: <eicar.20261123060000@news.bench.test>",
		"MIME-Version: 1.0",
		`Content-Type: multipart/mixed; boundary="=_bench_eicar"`,
		"",
		"--=_bench_eicar",
		"Content-Type: text/plain; charset=utf-8",
		"",
		"Here is the file.",
		"",
		"--=_bench_eicar",
		`Content-Type: application/octet-stream; name="eicar.txt"`,
		`Content-Disposition: attachment; filename="eicar.txt"`,
		"Content-Transfer-Encoding: base64",
		"",
		base64.StdEncoding.EncodeToString([]byte(eicar())),
		"--=_bench_eicar--",
		"",
	}
	return strings.Join(lines, "\r\n")
}

// writeEicar writes eicarMessage to path.
func writeEicar(path string) error {
	return os.WriteFile(path, []byte(eicarMessage()), 0o644)
}
