package attach

import (
	"bytes"
	"encoding/binary"
	"slices"
	"strings"
	"unicode"
)

// Detected types, by the magic bytes of a part's decoded content (or of its
// last 512 bytes, for the formats that keep their signature in a trailer):
//
//	pe      Windows PE/MS-DOS executable: "MZ"
//	elf     ELF executable or library: 7F "ELF"
//	macho   Mach-O, 32 and 64 bit, either byte order, and universal ("fat")
//	        binaries: CA FE BA BE/BF with fewer than 20 architectures (a
//	        Java class file has the same magic and a version above 44)
//	script  a "#!" interpreter line
//	msi     Windows Installer package or patch: an OLE file whose root
//	        storage has the installer's CLSID, when that directory entry
//	        lies within the first 36 KiB (it is also "ole")
//	ole     OLE compound file (D0 CF 11 E0 A1 B1 1A E1): MSI, legacy Office,
//	        Outlook .msg
//	lnk     Windows shortcut (shell link header and CLSID)
//	iso     ISO 9660 or UDF image: "CD001", "BEA01" or "NSR0" at 0x8001,
//	        0x8801 or 0x9001
//	vhd     Virtual Hard Disk: "conectix" at the start (dynamic disks) or in
//	        the 512-byte footer (fixed disks)
//	vhdx    VHDX: "vhdxfile"
//	dmg     Apple disk image: "koly" trailer in the last 512 bytes
//	zip     ZIP archive (also Office Open XML, JAR, APK): "PK" 03 04, 05 06
//	        or 07 08
//	rar     RAR 4 and 5: "Rar!" 1A 07
//	7z      7-Zip: "7z" BC AF 27 1C
//	gzip    gzip: 1F 8B
//	cab     Microsoft Cabinet: "MSCF" 00 00 00 00
//	pdf     PDF: "%PDF-" within the first 1024 bytes
var knownTypes = []string{
	"pe", "elf", "macho", "script", "msi", "ole", "lnk",
	"iso", "vhd", "vhdx", "dmg",
	"zip", "rar", "7z", "gzip", "cab", "pdf",
}

// KnownTypes lists the type names Scan can detect, for validating Rules.
func KnownTypes() []string { return slices.Clone(knownTypes) }

// sniffLen is how much of a part's decoded content is looked at: enough for
// the ISO 9660 and UDF volume descriptors at 0x8001 to 0x9005.
const sniffLen = 0x9001 + 5

// tailLen is how much of the end of a part's content is kept, for trailers.
const tailLen = 512

var (
	oleMagic = []byte{0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1}
	lnkMagic = []byte{0x4C, 0, 0, 0, 0x01, 0x14, 0x02, 0, 0, 0, 0, 0, 0xC0, 0, 0, 0, 0, 0, 0, 0x46}
	// The root storage CLSIDs of MSI packages {000C1084-0000-0000-C000-
	// 000000000046} and patches {000C1086-...}, in their stored byte order
	// but for the varying second byte.
	msiCLSID = []byte{0x84, 0x10, 0x0C, 0, 0, 0, 0, 0, 0xC0, 0, 0, 0, 0, 0, 0, 0x46}
)

// sniff returns the types of content whose first bytes are head and whose
// last bytes (up to tailLen) are tail.
func sniff(head, tail []byte) []string {
	var ts []string
	has := func(off int, magic string) bool {
		return len(head) >= off+len(magic) && string(head[off:off+len(magic)]) == magic
	}
	switch {
	case has(0, "MZ"):
		ts = append(ts, "pe")
	case has(0, "\x7fELF"):
		ts = append(ts, "elf")
	case has(0, "\xfe\xed\xfa\xce"), has(0, "\xfe\xed\xfa\xcf"),
		has(0, "\xce\xfa\xed\xfe"), has(0, "\xcf\xfa\xed\xfe"):
		ts = append(ts, "macho")
	case (has(0, "\xca\xfe\xba\xbe") || has(0, "\xca\xfe\xba\xbf")) &&
		len(head) >= 8 && binary.BigEndian.Uint32(head[4:8]) < 20:
		ts = append(ts, "macho")
	case has(0, "#!"):
		ts = append(ts, "script")
	case bytes.HasPrefix(head, oleMagic):
		if isMSI(head) {
			ts = append(ts, "msi")
		}
		ts = append(ts, "ole")
	case bytes.HasPrefix(head, lnkMagic):
		ts = append(ts, "lnk")
	case has(0, "conectix"):
		ts = append(ts, "vhd")
	case has(0, "vhdxfile"):
		ts = append(ts, "vhdx")
	case has(0, "PK\x03\x04"), has(0, "PK\x05\x06"), has(0, "PK\x07\x08"):
		ts = append(ts, "zip")
	case has(0, "Rar!\x1a\x07"):
		ts = append(ts, "rar")
	case has(0, "7z\xbc\xaf\x27\x1c"):
		ts = append(ts, "7z")
	case has(0, "\x1f\x8b"):
		ts = append(ts, "gzip")
	case has(0, "MSCF\x00\x00\x00\x00"):
		ts = append(ts, "cab")
	case bytes.Contains(head[:min(len(head), 1024)], []byte("%PDF-")):
		ts = append(ts, "pdf")
	}
	for _, off := range []int{0x8001, 0x8801, 0x9001} {
		if has(off, "CD001") || has(off, "BEA01") || has(off, "NSR0") {
			ts = append(ts, "iso")
			break
		}
	}
	if len(tail) >= tailLen {
		t := tail[len(tail)-tailLen:]
		if bytes.HasPrefix(t, []byte("koly")) {
			ts = append(ts, "dmg")
		}
		// The footer of a fixed VHD is 512 bytes, or 511 from old tools.
		if !slices.Contains(ts, "vhd") && (bytes.HasPrefix(t, []byte("conectix")) || bytes.HasPrefix(t[1:], []byte("conectix"))) {
			ts = append(ts, "vhd")
		}
	}
	return ts
}

// isMSI reports whether the OLE compound file starting with head has an
// installer CLSID on its root directory entry, if that entry is in head.
// [MS-CFB] section 2.2: sector shift at 0x1E, first directory sector at
// 0x30; section 2.6: the CLSID is at 0x50 in a directory entry.
func isMSI(head []byte) bool {
	if len(head) < 0x34 {
		return false
	}
	shift := binary.LittleEndian.Uint16(head[0x1E:])
	if shift != 9 && shift != 12 {
		return false
	}
	sect := uint64(binary.LittleEndian.Uint32(head[0x30:]))
	off := (sect + 1) << shift
	if off+0x60 > uint64(len(head)) {
		return false
	}
	id := head[off+0x50 : off+0x60]
	return (id[0] == 0x84 || id[0] == 0x86) && bytes.Equal(id[1:], msiCLSID[1:])
}

// extension returns the lower-cased last extension of a file name as
// Windows sees it: path components removed, and trailing dots, slashes,
// white space and invisible format characters (which Windows or the user's
// eye drops) trimmed, so "invoice.exe. " has extension "exe".
func extension(name string) string {
	trim := func(s string) string {
		return strings.TrimRightFunc(s, func(r rune) bool {
			return r == '.' || r == '/' || r == '\\' || unicode.IsSpace(r) || unicode.IsControl(r) || unicode.Is(unicode.Cf, r)
		})
	}
	name = trim(name)
	if i := strings.LastIndexAny(name, `/\`); i >= 0 {
		name = trim(name[i+1:])
	}
	i := strings.LastIndexByte(name, '.')
	if i < 0 {
		return ""
	}
	return strings.ToLower(name[i+1:])
}
