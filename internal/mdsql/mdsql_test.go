package mdsql

import (
	"strings"
	"testing"
)

func TestBlocks(t *testing.T) {
	doc := "text\n```sql\n-- one: first\nSELECT 1;\n```\nmore\n```sql\n-- two: second\nSELECT 2;\n```\n"
	got, err := Blocks(doc)
	if err != nil || len(got) != 2 || !strings.Contains(got["one"], "SELECT 1;") || !strings.Contains(got["two"], "SELECT 2;") {
		t.Errorf("Blocks = %q, %v", got, err)
	}
	for _, bad := range []string{
		"```sql\nSELECT 1;\n```",                       // no name
		"```sql\n-- a: x\nSELECT 1;\n",                 // unterminated
		"```sql\n-- a: x\n```\n```sql\n-- a: y\n```\n", // duplicate name
	} {
		if _, err := Blocks(bad); err == nil {
			t.Errorf("Blocks(%q): no error", bad)
		}
	}
}
