package control

import (
	"testing"

	pb "github.com/tetherlb/tether/api/hostpb"
	"github.com/tetherlb/tether/api/unit"
	"github.com/tetherlb/tether/ctlplane/atoms"
	"github.com/tetherlb/tether/ctlplane/hosts"
	"github.com/tetherlb/tether/internal/mtls"
)

func TestSessionKey(t *testing.T) {
	c4, v4 := []byte{198, 51, 100, 7}, []byte{192, 0, 2, 10}
	v6 := []byte{0x20, 0x01, 0xd, 0xb8, 15: 1}
	for want, s := range map[string]*pb.Session{
		"session/tcp/198.51.100.7:4000>192.0.2.10:80": {Kind: pb.SessionKind_SESSION_KIND_TCP, Client: c4, ClientPort: 4000, Vip: v4, VipPort: 80},
		"session/ip/198.51.100.7":                     {Kind: pb.SessionKind_SESSION_KIND_CLIENT_IP, Client: c4, IdleTimeoutMs: 1000},
		"session/ip/198.51.100.7>192.0.2.10:443":      {Kind: pb.SessionKind_SESSION_KIND_CLIENT_IP, Client: c4, Vip: v4, VipPort: 443},
		"session/app/[2001:db8::1]:443/637573746f6d":  {Kind: pb.SessionKind_SESSION_KIND_APP_KEY, Vip: v6, VipPort: 443, Key: []byte("custom")},
	} {
		if got := sessionKey(s); got != want {
			t.Errorf("%v: %q, want %q", s, got, want)
		}
	}
}

// TestSessionAtoms: a host's sessions become atoms of that host; a
// change adds and deletes; a resync replaces the host's set; an empty
// resync (the host reports elsewhere now) deletes nothing; a session
// that moved to another host is not deleted by the first host's down.
func TestSessionAtoms(t *testing.T) {
	dir := t.TempDir()
	ca, _, err := mtls.OpenCA(dir, "test")
	if err != nil {
		t.Fatal(err)
	}
	c, m := routeUnit(t, ca, dir, "unit-a", 1, unit.ReloadReply{})
	mgr := c.cl.atoms.Load()
	mgr.SetMembers([]atoms.Member{m})
	ip := func(last byte) *pb.Session {
		return &pb.Session{Kind: pb.SessionKind_SESSION_KIND_CLIENT_IP, Client: []byte{198, 51, 100, last}, IdleTimeoutMs: 60000, Application: "shop"}
	}
	live := func(key string) (string, bool) {
		a, ok := mgr.Get(key)
		return a.Host, ok && !a.Zombie
	}
	c.onSessions(7, hosts.SessionBatch{Resync: true, Up: []*pb.Session{ip(1), ip(2)}})
	if h, ok := live("session/ip/198.51.100.1"); !ok || h != "host/7" {
		t.Fatalf("after the resync: %q %v", h, ok)
	}
	if a, _ := mgr.Get("session/ip/198.51.100.1"); string(a.Data) != "shop" || a.Timeout.Milliseconds() != 60000 {
		t.Errorf("atom: %+v", a)
	}
	c.onSessions(7, hosts.SessionBatch{Up: []*pb.Session{ip(3)}, Down: []*pb.Session{ip(1)}})
	if _, ok := live("session/ip/198.51.100.1"); ok {
		t.Error("a session that ended is still live")
	}
	if _, ok := live("session/ip/198.51.100.3"); !ok {
		t.Error("a new session is missing")
	}
	c.onSessions(7, hosts.SessionBatch{Resync: true, Up: []*pb.Session{ip(3)}})
	if _, ok := live("session/ip/198.51.100.2"); ok {
		t.Error("a session the resync left out is still live")
	}
	c.onSessions(7, hosts.SessionBatch{Resync: true})
	if _, ok := live("session/ip/198.51.100.3"); !ok {
		t.Error("an empty resync deleted the host's sessions")
	}
	c.onSessions(8, hosts.SessionBatch{Up: []*pb.Session{ip(3)}})
	c.onSessions(7, hosts.SessionBatch{Down: []*pb.Session{ip(3)}})
	if h, ok := live("session/ip/198.51.100.3"); !ok || h != "host/8" {
		t.Errorf("the client's session moved to host 8, then host 7's down: %q %v", h, ok)
	}
}
