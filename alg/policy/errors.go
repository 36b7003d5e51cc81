package policy

import (
	"fmt"
	"strings"
)

// Error is one problem found in a policy file.
type Error struct {
	// File is the name the policy was loaded or parsed under.
	File string
	// Line is the 1-based line the problem is on. It is 0 only when the
	// YAML parser reported a syntax error without a position.
	Line int
	// Key is the path of the offending key, such as
	// "servers[0].passive_ports"; empty for problems with the document as
	// a whole (YAML syntax).
	Key string
	// Msg says what is wrong and, where possible, how to fix it.
	Msg string
}

// Error formats e as "file:line: key: msg", leaving out the parts that are
// empty.
func (e Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	b.WriteString(": ")
	if e.Key != "" {
		b.WriteString(e.Key)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Errors is every problem found in one policy file, in line order. Parse and
// Load return it as their error whenever the policy is invalid.
type Errors struct {
	List []Error
}

// Error formats the problems one per line, with no trailing newline.
func (e *Errors) Error() string {
	lines := make([]string, len(e.List))
	for i, err := range e.List {
		lines[i] = err.Error()
	}
	return strings.Join(lines, "\n")
}

// Unwrap returns the individual problems so that errors.As can reach them.
func (e *Errors) Unwrap() []error {
	errs := make([]error, len(e.List))
	for i, err := range e.List {
		errs[i] = err
	}
	return errs
}
