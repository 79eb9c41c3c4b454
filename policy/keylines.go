package policy

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// lineIndex maps key paths ("milter.listen", "organization[1].spf.fail") to
// the line of the file that sets them, so that validation problems, which
// BurntSushi/toml cannot place, name their line. It is a line scanner, not a
// TOML parser: the file has already been parsed successfully when it runs.
type lineIndex map[string]int

var (
	tableLine = regexp.MustCompile(`^\s*\[\s*([^\[\]]+?)\s*\]\s*(#.*)?$`)
	arrayLine = regexp.MustCompile(`^\s*\[\[\s*([^\[\]]+?)\s*\]\]\s*(#.*)?$`)
	keyLine   = regexp.MustCompile(`^\s*("(?:[^"\\]|\\.)*"|'[^']*'|[A-Za-z0-9_.-]+)\s*=`)
)

func keyLines(src []byte) lineIndex {
	idx := lineIndex{}
	arrays := map[string]int{} // array-of-tables name -> count seen so far
	table := ""
	for n, line := range strings.Split(string(src), "\n") {
		lineNo := n + 1
		if m := arrayLine.FindStringSubmatch(line); m != nil {
			parts := splitKey(m[1])
			name := joinKey(parts)
			// [[organization.user]] belongs to the latest [[organization]]
			// and is counted within it.
			if c, ok := arrays[parts[0]]; ok && c > 0 && len(parts) > 1 {
				name = joinKey(append([]string{fmt.Sprintf("%s[%d]", parts[0], c-1)}, parts[1:]...))
			}
			table = fmt.Sprintf("%s[%d]", name, arrays[name])
			arrays[name]++
			idx.add(table, lineNo)
			continue
		}
		if m := tableLine.FindStringSubmatch(line); m != nil {
			parts := splitKey(m[1])
			// [organization.spf] belongs to the latest [[organization]].
			if c, ok := arrays[parts[0]]; ok && c > 0 {
				table = joinKey(append([]string{fmt.Sprintf("%s[%d]", parts[0], c-1)}, parts[1:]...))
			} else {
				table = joinKey(parts)
			}
			idx.add(table, lineNo)
			continue
		}
		if m := keyLine.FindStringSubmatch(line); m != nil {
			key := joinKey(splitKey(m[1]))
			if table != "" {
				key = table + "." + key
			}
			idx.add(key, lineNo)
		}
	}
	return idx
}

func (idx lineIndex) add(key string, line int) {
	if _, seen := idx[key]; !seen {
		idx[key] = line
	}
	// Undecoded keys from the TOML library carry no array index.
	bare := arrayIndex.ReplaceAllString(key, "")
	if _, seen := idx[bare]; !seen {
		idx[bare] = line
	}
}

var arrayIndex = regexp.MustCompile(`\[\d+\]`)

// find returns the line of key, or of its closest enclosing table, or 0.
func (idx lineIndex) find(key string) int {
	for k := key; k != ""; {
		if line, ok := idx[k]; ok {
			return line
		}
		i := strings.LastIndexAny(k, ".[")
		if i < 0 {
			break
		}
		k = k[:i]
	}
	return 0
}

// splitKey splits a dotted TOML key, honouring quoted parts.
func splitKey(s string) []string {
	var parts []string
	for s = strings.TrimSpace(s); s != ""; {
		var part string
		switch s[0] {
		case '"':
			end := 1
			for end < len(s) && s[end] != '"' {
				if s[end] == '\\' {
					end++
				}
				end++
			}
			if uq, err := strconv.Unquote(s[:min(end+1, len(s))]); err == nil {
				part = uq
			} else {
				part = strings.Trim(s[:min(end+1, len(s))], `"`)
			}
			s = s[min(end+1, len(s)):]
		case '\'':
			end := strings.IndexByte(s[1:], '\'') + 1
			if end <= 0 {
				end = len(s) - 1
			}
			part, s = s[1:end], s[end+1:]
		default:
			i := strings.IndexByte(s, '.')
			if i < 0 {
				i = len(s)
			}
			part, s = strings.TrimSpace(s[:i]), s[i:]
		}
		parts = append(parts, part)
		s = strings.TrimLeft(strings.TrimSpace(s), ".")
		s = strings.TrimSpace(s)
	}
	return parts
}

// joinKey renders key parts as mxguard writes key paths in messages.
func joinKey(parts []string) string {
	q := make([]string, len(parts))
	for i, p := range parts {
		if strings.HasSuffix(p, "]") && strings.Contains(p, "[") {
			q[i] = p
		} else {
			q[i] = quoteKey(p)
		}
	}
	return strings.Join(q, ".")
}
