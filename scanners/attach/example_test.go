package attach_test

import (
	"fmt"
	"strings"

	"github.com/mxguard/mxguard/scanners/attach"
)

func ExampleScan() {
	msg := "From: a@example.com\r\n" +
		"Content-Type: multipart/mixed; boundary=b\r\n" +
		"\r\n" +
		"--b\r\n" +
		"Content-Type: text/plain\r\n" +
		"\r\n" +
		"Please pay.\r\n" +
		"--b\r\n" +
		"Content-Type: application/octet-stream\r\n" +
		"Content-Disposition: attachment; filename=\"=?utf-8?q?invoice=2Epdf=2Eexe?=\"\r\n" +
		"Content-Transfer-Encoding: base64\r\n" +
		"\r\n" +
		"TVqQAAMAAAAEAAAA\r\n" +
		"--b--\r\n"
	rep, err := attach.Scan(strings.NewReader(msg), attach.DefaultRules(), attach.Limits{})
	if err != nil {
		panic(err)
	}
	for _, f := range rep.Findings {
		fmt.Println(f)
	}
	fmt.Println(rep.Parts, "parts,", len(rep.Problems), "problems")
	// Output:
	// part 2 "invoice.pdf.exe": extension exe, type pe
	// 3 parts, 0 problems
}
