package cluster

import (
	"strings"
)

// logWriter takes memberlist's log lines (it logs through a *log.Logger
// with no prefix or flags: "[LEVEL] memberlist: text") into the unit's
// logger at the matching level, and counts the refused traffic they
// report. memberlist reports a message or stream it cannot decrypt
// nowhere but in its log, so counting those lines is the only way to see
// a stranger (or a unit with another key) knocking; the match is on the
// texts of memberlist v0.7.0 ("Decrypt packet failed", "no installed
// keys could decrypt the message", "remote state is not encrypted") and
// a later version that rewords them would make the count miss them.
type logWriter Node

// Write implements io.Writer; log.Logger calls it once per line.
func (w *logWriter) Write(p []byte) (int, error) {
	line := strings.TrimSpace(string(p))
	level, text := "", line
	if strings.HasPrefix(line, "[") {
		if i := strings.IndexByte(line, ']'); i > 0 {
			level, text = line[1:i], strings.TrimSpace(line[i+1:])
		}
	}
	text = strings.TrimPrefix(text, "memberlist: ")
	n := (*Node)(w)
	lower := strings.ToLower(text)
	switch {
	case level == "ERR" && strings.Contains(lower, "not encrypted"):
		n.refuse(RefusedUnencrypted, text)
		return len(p), nil
	case level == "ERR" && strings.Contains(lower, "decrypt"):
		n.refuse(RefusedDecrypt, text)
		return len(p), nil
	}
	ev := n.log.Debug()
	switch {
	case level == "WARN" && strings.Contains(text, "ignoring alive message"):
		// Already counted and logged as refused metadata (view.go).
	case level == "ERR":
		ev = n.log.Error()
	case level == "WARN":
		ev = n.log.Warn()
	case level == "INFO":
		ev = n.log.Info()
	}
	ev.Str("part", "memberlist").Msg(text)
	return len(p), nil
}
