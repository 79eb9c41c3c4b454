package attach

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func FuzzScan(f *testing.F) {
	for _, c := range scanCases(f) {
		if len(c.msg) > 1<<16 {
			continue
		}
		f.Add([]byte(c.msg))
		f.Add([]byte(strings.ReplaceAll(c.msg, "\n", "\r\n")))
	}
	emls, _ := filepath.Glob(filepath.Join("testdata", "*.eml"))
	for _, p := range emls {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	rules := DefaultRules()
	rules.Types = KnownTypes()
	rules.Extensions = append(rules.Extensions, "zip", "txt")
	lim := Limits{MaxDepth: 6, MaxParts: 60, MaxArchiveBytes: 1 << 16, MaxArchiveMembers: 40}
	f.Fuzz(func(t *testing.T, msg []byte) {
		rep, err := Scan(bytes.NewReader(msg), rules, lim)
		if err != nil {
			t.Fatalf("Scan: %v", err)
		}
		if rep.Parts > lim.MaxParts {
			t.Errorf("%d parts, limit %d", rep.Parts, lim.MaxParts)
		}
		if len(rep.Problems) > maxProblems+1 {
			t.Errorf("%d problems", len(rep.Problems))
		}
		for _, fd := range rep.Findings {
			if fd.Extension == "" && fd.Type == "" || fd.String() == "" {
				t.Errorf("empty finding %#v", fd)
			}
			if strings.Count(fd.Part, ".") > lim.MaxDepth {
				t.Errorf("finding %v deeper than %d", fd, lim.MaxDepth)
			}
		}
	})
}
