// Package mdsql extracts the example SQL queries of a Markdown document, so
// that tests can run the queries our documentation shows and the docs
// cannot rot.
package mdsql

import (
	"fmt"
	"strings"
)

// Blocks returns the document's ```sql blocks by name. A block's first line
// is "-- name: description".
func Blocks(markdown string) (map[string]string, error) {
	queries := make(map[string]string)
	rest := markdown
	for {
		_, block, ok := strings.Cut(rest, "```sql\n")
		if !ok {
			return queries, nil
		}
		block, rest, ok = strings.Cut(block, "```")
		if !ok {
			return nil, fmt.Errorf("unterminated sql block")
		}
		first, _, _ := strings.Cut(block, "\n")
		name, _, ok := strings.Cut(strings.TrimPrefix(first, "-- "), ":")
		if !ok || !strings.HasPrefix(first, "-- ") {
			return nil, fmt.Errorf("sql block does not start with \"-- name: description\": %q", first)
		}
		if _, dup := queries[name]; dup {
			return nil, fmt.Errorf("two sql blocks are named %q", name)
		}
		queries[name] = block
	}
}
