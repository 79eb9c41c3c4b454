package attach

import (
	"archive/zip"
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
)

// b64 base64-encodes data in 76-character lines.
func b64(data []byte) string {
	s := base64.StdEncoding.EncodeToString(data)
	var b strings.Builder
	for len(s) > 76 {
		b.WriteString(s[:76] + "\n")
		s = s[76:]
	}
	return b.String() + s + "\n"
}

// zipOf returns a zip archive of the named members (content: the name).
func zipOf(t testing.TB, names ...string) []byte {
	var buf bytes.Buffer
	w := zip.NewWriter(&buf)
	for _, n := range names {
		f, err := w.Create(n)
		if err != nil {
			t.Fatal(err)
		}
		f.Write([]byte(n))
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// zipWith returns a zip archive with one member holding content, stored with
// flags (bit 0: encrypted).
func zipWith(t testing.TB, name string, content []byte, flags uint16) []byte {
	var buf bytes.Buffer
	w := zip.NewWriter(&buf)
	f, err := w.CreateRaw(&zip.FileHeader{Name: name, Method: zip.Store, Flags: flags,
		CompressedSize64: uint64(len(content)), UncompressedSize64: uint64(len(content))})
	if err != nil {
		t.Fatal(err)
	}
	f.Write(content)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// mixed builds a multipart/mixed message of the given parts (each its
// header lines, an empty line and its body).
func mixed(parts ...string) string {
	var b strings.Builder
	b.WriteString("From: a@example.com\nSubject: test\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"BOUNDARY\"\n\nThis is a multi-part message.\n")
	for _, p := range parts {
		b.WriteString("--BOUNDARY\n" + p)
		if !strings.HasSuffix(p, "\n") {
			b.WriteString("\n")
		}
	}
	b.WriteString("--BOUNDARY--\n")
	return b.String()
}

const textPart = "Content-Type: text/plain; charset=utf-8\n\nHello.\n"

// attachment is a base64 part with the given Content-Type and
// Content-Disposition values.
func attachment(ctype, disp string, content []byte) string {
	h := "Content-Type: " + ctype + "\nContent-Transfer-Encoding: base64\n"
	if disp != "" {
		h += "Content-Disposition: " + disp + "\n"
	}
	return h + "\n" + b64(content)
}

var (
	peContent = append([]byte("MZ\x90\x00\x03\x00\x00\x00"), bytes.Repeat([]byte{0}, 120)...)
	isoImage  = func() []byte {
		b := make([]byte, 0x8800)
		copy(b[0x8001:], "CD001")
		return b
	}()
)

func readTestdata(t testing.TB, name string) string {
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

type scanCase struct {
	name     string
	msg      string
	rules    Rules // DefaultRules if zero
	lim      Limits
	want     []Finding
	problems bool // whether Report.Problems must be non-empty
	parts    int  // Report.Parts, if not 0
}

func scanCases(t testing.TB) []scanCase {
	typesPE := Rules{Extensions: []string{"exe"}, Types: []string{"pe"}}
	many := make([]string, 20)
	for i := range many {
		many[i] = attachment("application/octet-stream", `attachment; filename="f.exe"`, []byte("x"))
	}
	deep := "Content-Type: application/octet-stream; name=\"deep.exe\"\n\nx\n"
	for i := range 15 {
		b := fmt.Sprintf("lvl%d", i)
		deep = "Content-Type: multipart/mixed; boundary=\"" + b + "\"\n\n--" + b + "\n" + deep + "--" + b + "--\n"
	}
	nestedZip := zipWith(t, "inner.zip", zipOf(t, "deeper/payload.exe"), 0)
	return []scanCase{
		{
			name:  "plain text",
			msg:   "From: a@example.com\nSubject: hi\n\nJust text.\n",
			parts: 1,
		},
		{
			name:  "exe by name",
			msg:   mixed(textPart, attachment(`application/octet-stream; name="invoice.exe"`, `attachment; filename="invoice.exe"`, []byte("hi"))),
			want:  []Finding{{Part: "2", Filename: "invoice.exe", Extension: "exe"}},
			parts: 3,
		},
		{
			name: "exe by Content-Type name only",
			msg:  mixed(textPart, attachment(`application/octet-stream; name=INVOICE.EXE`, "", []byte("hi"))),
			want: []Finding{{Part: "2", Filename: "INVOICE.EXE", Extension: "exe"}},
		},
		{
			name: "single part body",
			msg:  "Subject: x\nContent-Type: application/x-msdownload\nContent-Disposition: attachment; filename=tool.com\nContent-Transfer-Encoding: base64\n\n" + b64([]byte("hi")),
			want: []Finding{{Part: "", Filename: "tool.com", Extension: "com"}},
		},
		{
			name: "RFC 2231 name",
			msg:  mixed(textPart, attachment("application/octet-stream", `attachment; filename*=utf-8''inv%C3%B6ice%20copy.exe`, []byte("hi"))),
			want: []Finding{{Part: "2", Filename: "invöice copy.exe", Extension: "exe"}},
		},
		{
			name: "RFC 2231 continuations",
			msg: mixed(textPart, attachment("application/octet-stream",
				"attachment;\n filename*0*=UTF-8''my%20;\n filename*1=\"file.e\";\n filename*2=\"xe\"", []byte("hi"))),
			want: []Finding{{Part: "2", Filename: "my file.exe", Extension: "exe"}},
		},
		{
			name: "RFC 2231 ISO 8859-1",
			msg:  mixed(textPart, attachment("application/octet-stream", `attachment; filename*=iso-8859-1'fr'r%E9sum%E9.scr`, []byte("hi"))),
			want: []Finding{{Part: "2", Filename: "résumé.scr", Extension: "scr"}},
		},
		{
			name: "RFC 2047 name",
			msg:  mixed(textPart, attachment(`application/octet-stream; name="=?UTF-8?B?aW52b2ljZS5leGU=?="`, "", []byte("hi"))),
			want: []Finding{{Part: "2", Filename: "invoice.exe", Extension: "exe"}},
		},
		{
			name: "RFC 2047 split words and ISO 8859-1",
			msg:  mixed(textPart, attachment("application/octet-stream", "attachment; filename=\"=?iso-8859-1?Q?r=E9sum=E9?=\n =?iso-8859-1?Q?=2Ejs?=\"", []byte("hi"))),
			want: []Finding{{Part: "2", Filename: "résumé.js", Extension: "js"}},
		},
		{
			name: "RFC 2047 unknown charset matched on raw bytes",
			msg:  mixed(textPart, attachment(`application/octet-stream; name="=?x-unknown?Q?evil.vbs?="`, "", []byte("hi"))),
			want: []Finding{{Part: "2", Filename: "evil.vbs", Extension: "vbs"}},
		},
		{
			name: "double extension",
			msg: mixed(textPart,
				attachment("application/pdf", `attachment; filename="invoice.pdf.exe"`, []byte("hi")),
				attachment("application/pdf", `attachment; filename="invoice.exe.pdf"`, []byte("%PDF-1.4"))),
			want: []Finding{{Part: "2", Filename: "invoice.pdf.exe", Extension: "exe"}},
		},
		{
			name: "trailing dots and spaces",
			msg: mixed(textPart,
				attachment("application/octet-stream", `attachment; filename="x.exe."`, []byte("hi")),
				attachment("application/octet-stream", `attachment; filename="y.Bat . . "`, []byte("hi"))),
			want: []Finding{
				{Part: "2", Filename: "x.exe.", Extension: "exe"},
				{Part: "3", Filename: "y.Bat . . ", Extension: "bat"},
			},
		},
		{
			name:  "PE content with innocent name",
			msg:   mixed(textPart, attachment("text/plain", `attachment; filename="report.txt"`, peContent)),
			rules: typesPE,
			want:  []Finding{{Part: "2", Filename: "report.txt", Type: "pe"}},
		},
		{
			name:  "PE content not matched without type rule",
			msg:   mixed(textPart, attachment("text/plain", `attachment; filename="report.txt"`, peContent)),
			rules: Rules{Extensions: []string{"exe"}},
		},
		{
			name: "extension and type together",
			msg:  mixed(attachment("application/octet-stream", `attachment; filename="a.exe"`, peContent)),
			want: []Finding{{Part: "1", Filename: "a.exe", Extension: "exe", Type: "pe"}},
		},
		{
			name: "quoted-printable PE",
			msg:  mixed("Content-Type: text/plain; name=readme.txt\nContent-Transfer-Encoding: quoted-printable\n\n=4D=5A=90=00=03=\n=00\n"),
			want: []Finding{{Part: "1", Filename: "readme.txt", Type: "pe"}},
		},
		{
			name: "zip member",
			msg:  mixed(textPart, attachment("application/zip", `attachment; filename="docs.zip"`, zipOf(t, "readme.txt", "sub/run.js", "a.pdf"))),
			want: []Finding{{Part: "2", Filename: "sub/run.js", Archive: "docs.zip", Extension: "js"}},
		},
		{
			name: "zip detected by content, unnamed",
			msg:  mixed(textPart, attachment("application/octet-stream", "", zipOf(t, "run.exe"))),
			want: []Finding{{Part: "2", Filename: "run.exe", Archive: unnamedArchive, Extension: "exe"}},
		},
		{
			name: "encrypted zip lists names",
			msg:  mixed(attachment("application/zip", `attachment; filename="locked.zip"`, zipWith(t, "payload.js", []byte("garbage"), 1))),
			want: []Finding{{Part: "1", Filename: "payload.js", Archive: "locked.zip", Extension: "js"}},
		},
		{
			name: "zip inside zip, one level",
			msg:  mixed(attachment("application/zip", `attachment; filename="outer.zip"`, nestedZip)),
			want: []Finding{{Part: "1", Filename: "deeper/payload.exe", Archive: "outer.zip/inner.zip", Extension: "exe"}},
		},
		{
			name:     "zip inside zip inside zip not opened",
			msg:      mixed(attachment("application/zip", `attachment; filename="outer.zip"`, zipWith(t, "mid.zip", zipWith(t, "inner.zip", zipOf(t, "x.exe"), 0), 0))),
			problems: true,
		},
		{
			name:     "zip larger than MaxArchiveBytes",
			msg:      mixed(attachment("application/zip", `attachment; filename="big.zip"`, zipOf(t, "run.js"))),
			lim:      Limits{MaxArchiveBytes: 50},
			problems: true,
		},
		{
			name: "zip members limit",
			msg:  mixed(attachment("application/zip", `attachment; filename="m.zip"`, zipOf(t, "a.txt", "b.txt", "c.exe"))),
			lim:  Limits{MaxArchiveMembers: 2},
			// c.exe is past the limit.
			problems: true,
		},
		{
			name:     "broken zip",
			msg:      mixed(attachment("application/zip", `attachment; filename="broken.zip"`, []byte("PK\x03\x04 not really"))),
			problems: true,
		},
		{
			name:  "nested multipart in alternative in message/rfc822",
			msg:   readTestdata(t, "nested.eml"),
			want:  []Finding{{Part: "2.2.2", Filename: "setup.exe", Extension: "exe", Type: "pe"}},
			parts: 9,
		},
		{
			name:  "attached message with single-part body",
			msg:   mixed(textPart, "Content-Type: message/rfc822\n\nSubject: inner\nContent-Type: application/octet-stream; name=\"i.exe\"\n\nx\n"),
			want:  []Finding{{Part: "2.1", Filename: "i.exe", Extension: "exe"}},
			parts: 4,
		},
		{
			name: "base64-encoded attached message",
			msg:  mixed("Content-Type: message/rfc822\nContent-Transfer-Encoding: base64\n\n" + b64([]byte("Subject: inner\nContent-Type: application/octet-stream; name=\"i.exe\"\n\nx\n"))),
			want: []Finding{{Part: "1.1", Filename: "i.exe", Extension: "exe"}},
		},
		{
			name: "multipart/digest defaults to message/rfc822",
			msg:  "Content-Type: multipart/digest; boundary=d\n\n--d\n\nSubject: one\nContent-Type: text/plain; name=\"one.hta\"\n\nx\n--d--\n",
			want: []Finding{{Part: "1.1", Filename: "one.hta", Extension: "hta"}},
		},
		{
			name: "ISO image by content",
			msg:  mixed(textPart, attachment("image/jpeg", `attachment; filename="photo.jpg"`, isoImage)),
			want: []Finding{{Part: "2", Filename: "photo.jpg", Type: "iso"}},
		},
		{
			name:     "malformed MIME",
			msg:      readTestdata(t, "malformed.eml"),
			want:     []Finding{{Part: "2.1", Filename: "a.scr", Extension: "scr", Type: "pe"}, {Part: "2.2", Filename: "b.js", Extension: "js"}},
			problems: true,
		},
		{
			name: "NUL bytes in name and content",
			msg:  readTestdata(t, "nul.eml"),
			want: []Finding{{Part: "1", Filename: "nul\x00.exe", Extension: "exe", Type: "pe"}},
		},
		{
			name:     "boundary never closed",
			msg:      "Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: application/octet-stream; name=x.exe\n\nMZ",
			want:     []Finding{{Part: "1", Filename: "x.exe", Extension: "exe", Type: "pe"}},
			problems: true,
		},
		{
			name:     "boundary missing from body",
			msg:      "Content-Type: multipart/mixed; boundary=b\n\nno parts here\n",
			problems: true,
		},
		{
			name:     "multipart without boundary parameter",
			msg:      "Content-Type: multipart/mixed; name=\"a.exe\"\n\nMZ\n",
			want:     []Finding{{Part: "", Filename: "a.exe", Extension: "exe", Type: "pe"}},
			problems: true,
		},
		{
			name:     "bad base64",
			msg:      mixed(attachment("application/octet-stream", `attachment; filename="x.txt"`, nil) + "TV*q\x00QA==AA=\nA\n"),
			want:     []Finding{{Part: "1", Filename: "x.txt", Type: "pe"}},
			problems: true,
		},
		{
			name: "headers without values and odd spacing",
			msg:  "Subject:\nContent-Type : multipart/mixed ; boundary = \"b\"\n\n--b\nContent-Type:\nContent-Disposition:\n\n--b\nContent-Disposition: attachment ; filename = evil.cmd\n\nx\n--b--\n",
			want: []Finding{{Part: "2", Filename: "evil.cmd", Extension: "cmd"}},
		},
		{
			name:     "part header line without colon does not hide the next part",
			msg:      mixed("Content-Type: text/plain\nbroken header line\n\nbody", attachment("application/octet-stream", `attachment; filename="y.exe"`, []byte("hi"))),
			want:     []Finding{{Part: "2", Filename: "y.exe", Extension: "exe"}},
			problems: true,
		},
		{
			name:     "1 MB header line",
			msg:      "X-Junk: " + strings.Repeat("a", 1<<20) + "\n" + mixed(attachment("application/octet-stream", `attachment; filename="z.exe"`, []byte("hi")))[len("From: a@example.com\n"):],
			want:     []Finding{{Part: "1", Filename: "z.exe", Extension: "exe"}},
			problems: true,
		},
		{
			name:     "1 MB part header line",
			msg:      mixed("X-Junk: "+strings.Repeat("b", 1<<20)+"\nContent-Type: text/plain; name=w.exe\n\nx\n", textPart),
			want:     []Finding{{Part: "1", Filename: "w.exe", Extension: "exe"}},
			problems: true,
		},
		{
			name:     "MaxParts",
			msg:      mixed(many...),
			lim:      Limits{MaxParts: 5},
			want:     slices.Repeat([]Finding{{Filename: "f.exe", Extension: "exe"}}, 4),
			problems: true,
			parts:    5,
		},
		{
			name:     "MaxDepth",
			msg:      deep,
			lim:      Limits{MaxDepth: 5},
			problems: true,
			parts:    6,
		},
		{
			name: "default depth is enough for 15 levels",
			msg:  deep,
			lim:  Limits{MaxDepth: 20},
			want: []Finding{{Part: "1.1.1.1.1.1.1.1.1.1.1.1.1.1.1", Filename: "deep.exe", Extension: "exe"}},
		},
	}
}

// fixParts fills in the part paths of the MaxParts case's findings.
func fixParts(c *scanCase) {
	if c.name == "MaxParts" {
		for i := range c.want {
			c.want[i].Part = string(rune('1' + i))
		}
	}
}

func TestScan(t *testing.T) {
	for _, c := range scanCases(t) {
		fixParts(&c)
		for _, crlf := range []bool{false, true} {
			name := c.name + "/LF"
			msg := c.msg
			if crlf {
				name = c.name + "/CRLF"
				msg = strings.ReplaceAll(msg, "\n", "\r\n")
			}
			t.Run(name, func(t *testing.T) {
				rules := c.rules
				if rules.Extensions == nil && rules.Types == nil {
					rules = DefaultRules()
				}
				rep, err := Scan(strings.NewReader(msg), rules, c.lim)
				if err != nil {
					t.Fatalf("Scan: %v", err)
				}
				if !slices.Equal(rep.Findings, c.want) {
					t.Errorf("findings:\n got %q\nwant %q", rep.Findings, c.want)
				}
				if got := len(rep.Problems) > 0; got != c.problems {
					t.Errorf("problems = %q, want some: %v", rep.Problems, c.problems)
				}
				if c.parts != 0 && rep.Parts != c.parts {
					t.Errorf("parts = %d, want %d", rep.Parts, c.parts)
				}
			})
		}
	}
}

// TestScanByteReader checks that the result does not depend on how the
// message's reader splits its input.
func TestScanByteReader(t *testing.T) {
	for _, c := range scanCases(t) {
		fixParts(&c)
		if len(c.msg) > 1<<16 {
			continue
		}
		rules := c.rules
		if rules.Extensions == nil && rules.Types == nil {
			rules = DefaultRules()
		}
		want, _ := Scan(strings.NewReader(c.msg), rules, c.lim)
		got, err := Scan(iotest.OneByteReader(strings.NewReader(c.msg)), rules, c.lim)
		if err != nil || !slices.Equal(got.Findings, want.Findings) || !slices.Equal(got.Problems, want.Problems) {
			t.Errorf("%s: one byte at a time: %v %q %q, want %q %q", c.name, err, got.Findings, got.Problems, want.Findings, want.Problems)
		}
	}
}

func TestScanReadError(t *testing.T) {
	boom := errors.New("boom")
	msg := io.MultiReader(strings.NewReader(mixed(textPart)[:80]), iotest.ErrReader(boom))
	if _, err := Scan(msg, DefaultRules(), Limits{}); !errors.Is(err, boom) {
		t.Errorf("Scan error = %v, want %v", err, boom)
	}
}

func TestFindingString(t *testing.T) {
	for _, c := range []struct {
		f    Finding
		want string
	}{
		{Finding{Part: "2", Filename: "invoice.exe", Extension: "exe"}, `part 2 "invoice.exe": extension exe`},
		{Finding{Part: "3", Filename: "run.js", Archive: "docs.zip", Extension: "js"}, `part 3 "docs.zip" member "run.js": extension js`},
		{Finding{Part: "1.2", Filename: "a.exe", Extension: "exe", Type: "pe"}, `part 1.2 "a.exe": extension exe, type pe`},
		{Finding{Type: "elf"}, `body: type elf`},
		{Finding{Part: "1", Filename: "a\nb.exe", Extension: "exe"}, `part 1 "a\nb.exe": extension exe`},
	} {
		if got := c.f.String(); got != c.want {
			t.Errorf("String() = %s, want %s", got, c.want)
		}
	}
}

func TestExtension(t *testing.T) {
	for name, want := range map[string]string{
		"a.exe":             "exe",
		"A.EXE":             "exe",
		"a.pdf.exe":         "exe",
		"a.exe.":            "exe",
		"a.exe . .":         "exe",
		"a.exe\t":           "exe",
		"a.exe\u200b":       "exe",
		`C:\temp\a.exe`:     "exe",
		"dir/a.js/":         "js",
		"noext":             "",
		"":                  "",
		"...":               "",
		"a.tar.gz":          "gz",
		"dir.d/file":        "",
		"a.exe\u202egpj.js": "js",
	} {
		if got := extension(name); got != want {
			t.Errorf("extension(%q) = %q, want %q", name, got, want)
		}
	}
}

func TestSniff(t *testing.T) {
	pad := func(b []byte) []byte { return append(b, make([]byte, 64)...) }
	trailer := func(magic string) []byte { b := make([]byte, 2048); copy(b[len(b)-512:], magic); return b }
	msiHead := make([]byte, 4096)
	copy(msiHead, oleMagic)
	msiHead[0x1E] = 9 // 512-byte sectors
	msiHead[0x30] = 1 // directory in sector 1, at (1+1)<<9
	copy(msiHead[1024+0x50:], msiCLSID)
	for _, c := range []struct {
		name string
		data []byte
		want []string
	}{
		{"pe", pad([]byte("MZ")), []string{"pe"}},
		{"elf", pad([]byte("\x7fELF\x02")), []string{"elf"}},
		{"macho64", pad([]byte("\xcf\xfa\xed\xfe")), []string{"macho"}},
		{"fat", pad([]byte("\xca\xfe\xba\xbe\x00\x00\x00\x02")), []string{"macho"}},
		{"java class", pad([]byte("\xca\xfe\xba\xbe\x00\x00\x00\x34")), nil},
		{"script", pad([]byte("#!/bin/sh\n")), []string{"script"}},
		{"ole", pad(slices.Clone(oleMagic)), []string{"ole"}},
		{"msi", msiHead, []string{"msi", "ole"}},
		{"lnk", pad(slices.Clone(lnkMagic)), []string{"lnk"}},
		{"iso", isoImage, []string{"iso"}},
		{"vhd dynamic", pad([]byte("conectix")), []string{"vhd"}},
		{"vhd fixed", trailer("conectix"), []string{"vhd"}},
		{"vhdx", pad([]byte("vhdxfile")), []string{"vhdx"}},
		{"dmg", trailer("koly"), []string{"dmg"}},
		{"zip", zipOf(t, "a"), []string{"zip"}},
		{"rar", pad([]byte("Rar!\x1a\x07\x01\x00")), []string{"rar"}},
		{"7z", pad([]byte("7z\xbc\xaf\x27\x1c")), []string{"7z"}},
		{"gzip", pad([]byte("\x1f\x8b\x08")), []string{"gzip"}},
		{"cab", pad([]byte("MSCF\x00\x00\x00\x00")), []string{"cab"}},
		{"pdf", []byte("\xef\xbb\xbf\n%PDF-1.7\n"), []string{"pdf"}},
		{"text", []byte("hello"), nil},
		{"empty", nil, nil},
	} {
		head := c.data[:min(len(c.data), sniffLen)]
		tail := c.data[max(0, len(c.data)-tailLen):]
		if got := sniff(head, tail); !slices.Equal(got, c.want) {
			t.Errorf("%s: sniff = %q, want %q", c.name, got, c.want)
		}
		for _, ty := range c.want {
			if !slices.Contains(KnownTypes(), ty) {
				t.Errorf("%s: type %q not in KnownTypes", c.name, ty)
			}
		}
	}
	for _, ty := range DefaultRules().Types {
		if !slices.Contains(KnownTypes(), ty) {
			t.Errorf("default type %q not in KnownTypes", ty)
		}
	}
}

func TestDecoders(t *testing.T) {
	data := make([]byte, 10000)
	for i := range data {
		data[i] = byte(i * 7)
	}
	for _, c := range []struct {
		name, in string
		qp       bool
		want     []byte
		problem  bool
	}{
		{name: "base64", in: b64(data), want: data},
		{name: "base64 CRLF and spaces", in: strings.ReplaceAll(b64([]byte("hello world")), "\n", " \r\n\t"), want: []byte("hello world")},
		{name: "base64 no padding", in: "aGVsbG8", want: []byte("hello")},
		{name: "base64 concatenated runs", in: "aGk=aGk=", want: []byte("hihi")},
		{name: "base64 junk", in: "aG!Vs*bG8=", want: []byte("hello"), problem: true},
		{name: "base64 single char run", in: "aGk=a", want: []byte("hi"), problem: true},
		{name: "qp", qp: true, in: "caf=C3=A9 =\r\nau lait=\n\r\nend=", want: []byte("café au lait\r\nend")},
		{name: "qp soft break with padding", qp: true, in: "a=  \nb", want: []byte("ab")},
		{name: "qp bad escape and NUL", qp: true, in: "a=ZZ\x00b", want: []byte("a=ZZ\x00b"), problem: true},
		{name: "qp long line", qp: true, in: strings.Repeat("x", 10000) + "=41", want: append(bytes.Repeat([]byte("x"), 10000), 'A')},
	} {
		for _, one := range []bool{false, true} {
			var src io.Reader = strings.NewReader(c.in)
			if one {
				src = iotest.OneByteReader(src)
			}
			var r io.Reader
			var problem func() string
			if c.qp {
				d := newQPReader(src)
				r, problem = d, d.problem
			} else {
				d := newB64Reader(src)
				r, problem = d, d.problem
			}
			got, err := io.ReadAll(iotest.HalfReader(r))
			if err != nil || !bytes.Equal(got, c.want) {
				t.Errorf("%s (one byte %v): %q, %v; want %q", c.name, one, got, err, c.want)
			}
			if (problem() != "") != c.problem {
				t.Errorf("%s: problem %q, want one: %v", c.name, problem(), c.problem)
			}
		}
	}
}

func TestMediaType(t *testing.T) {
	for _, c := range []struct {
		in, mt string
		params map[string][]string
	}{
		{`Text/Plain; charset="utf-8"`, "text/plain", map[string][]string{"charset": {"utf-8"}}},
		{`attachment; filename="a \"b\".exe"; size=3`, "attachment", map[string][]string{"filename": {`a "b".exe`}, "size": {"3"}}},
		{`attachment; filename=a.txt; filename=b.exe`, "attachment", map[string][]string{"filename": {"a.txt", "b.exe"}}},
		{`attachment; filename=my file.exe`, "attachment", map[string][]string{"filename": {"my file.exe"}}},
		{`attachment; junk; filename="unterminated.exe`, "attachment", map[string][]string{"filename": {"unterminated.exe"}}},
		{`attachment; filename*=''%41.exe; filename=fallback.txt`, "attachment", map[string][]string{"filename": {"A.exe", "fallback.txt"}}},
		{`attachment; filename*1="b.exe"; filename*0="a"`, "attachment", map[string][]string{"filename": {"ab.exe"}}},
		{``, "", map[string][]string{}},
	} {
		mt, params := mediaType(c.in)
		if mt != c.mt || len(params) != len(c.params) {
			t.Errorf("mediaType(%q) = %q %q, want %q %q", c.in, mt, params, c.mt, c.params)
			continue
		}
		for k, v := range c.params {
			if !slices.Equal(params[k], v) {
				t.Errorf("mediaType(%q)[%s] = %q, want %q", c.in, k, params[k], v)
			}
		}
	}
}

func TestDecodeWords(t *testing.T) {
	for _, c := range []struct{ in, shown, raw string }{
		{"plain.exe", "plain.exe", "plain.exe"},
		{"=?utf-8?q?a?= =?utf-8?q?b?=", "ab", "ab"},
		{"x =?utf-8?q?a?= y", "x a y", "x a y"},
		{"=?koi8-r?q?a=2Eexe?=", "=?koi8-r?q?a=2Eexe?=", "a.exe"},
		{"=?utf-8?x?bad?=.exe", "=?utf-8?x?bad?=.exe", "=?utf-8?x?bad?=.exe"},
		{"=?latin1?q?=E9?=", "é", "é"},
		{"=?utf-8?q?unterminated", "=?utf-8?q?unterminated", "=?utf-8?q?unterminated"},
	} {
		shown, raw := decodeWords(c.in)
		if shown != c.shown || raw != c.raw {
			t.Errorf("decodeWords(%q) = %q, %q; want %q, %q", c.in, shown, raw, c.shown, c.raw)
		}
	}
}
