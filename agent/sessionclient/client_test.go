package sessionclient

import (
	"errors"
	"net"
	"testing"
	"time"

	"github.com/tetherlb/tether/agent/sessions"
)

// TestHelpersNeedTCP: a connection without TCP addresses has no TCP or
// client-IP session, and a timeout out of bounds is refused before it
// is cut to the wire's milliseconds.
func TestHelpersNeedTCP(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if _, err := TCP(a, "x"); !errors.Is(err, errNotTCP) {
		t.Fatalf("TCP of a pipe: %v", err)
	}
	if _, err := ClientIP(a, false, time.Second, "x"); !errors.Is(err, errNotTCP) {
		t.Fatalf("ClientIP of a pipe: %v", err)
	}
	if _, err := ClientIP(a, false, 50*24*time.Hour, "x"); !errors.Is(err, sessions.ErrInvalid) {
		t.Fatalf("a 50-day timeout: %v, want ErrInvalid", err)
	}
}
