package bgp

import (
	"context"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	gbgp "github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/server"
	"github.com/rs/zerolog"
)

// router is a second GoBGP speaker standing for a router: it listens on
// 127.0.0.2 and takes the unit (127.0.0.1) as a peer.
type router struct {
	t    *testing.T
	s    *server.BgpServer
	port uint16
}

func startRouter(t *testing.T, password string) *router {
	t.Helper()
	// A free port on 127.0.0.2, for the router to listen on.
	l, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	port := uint16(l.Addr().(*net.TCPAddr).Port)
	l.Close()
	s := server.NewBgpServer()
	go s.Serve()
	t.Cleanup(s.Stop)
	ctx := context.Background()
	if err := s.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{
		Asn: 65000, RouterId: "127.0.0.2", ListenPort: int32(port), ListenAddresses: []string{"127.0.0.2"},
	}}); err != nil {
		t.Fatal(err)
	}
	if err := s.AddPeer(ctx, &api.AddPeerRequest{Peer: &api.Peer{
		Conf:      &api.PeerConf{NeighborAddress: "127.0.0.1", PeerAsn: 65001, AuthPassword: password},
		Transport: &api.Transport{PassiveMode: true, LocalAddress: "127.0.0.2"},
		AfiSafis: []*api.AfiSafi{{Config: &api.AfiSafiConfig{
			Family: &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}, Enabled: true,
		}}},
	}}); err != nil {
		t.Fatal(err)
	}
	return &router{t: t, s: s, port: port}
}

// routes returns what the router learnt, prefix → "next hop, AS path".
func (r *router) routes() map[string]string {
	out := map[string]string{}
	err := r.s.ListPath(apiutil.ListPathRequest{TableType: api.TableType_TABLE_TYPE_GLOBAL, Family: gbgp.RF_IPv4_UC},
		func(prefix gbgp.NLRI, paths []*apiutil.Path) {
			for _, p := range paths {
				if !p.PeerAddress.IsValid() || p.PeerAddress.String() != "127.0.0.1" {
					continue // the router's own
				}
				var nh, path string
				for _, a := range p.Attrs {
					switch a := a.(type) {
					case *gbgp.PathAttributeNextHop:
						nh = a.Value.String()
					case *gbgp.PathAttributeAsPath:
						path = strings.TrimSuffix(strings.TrimPrefix(a.String(), "{AsPath: "), "}")
					}
				}
				out[prefix.String()] = nh + ", " + path
			}
		})
	if err != nil {
		r.t.Fatal(err)
	}
	return out
}

// waitRoutes waits until the router's routes are want.
func (r *router) waitRoutes(what string, want map[string]string) {
	r.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		got := r.routes()
		if len(got) == len(want) && func() bool {
			for k, v := range want {
				if got[k] != v {
					return false
				}
			}
			return true
		}() {
			return
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("%s: the router has %v, want %v", what, got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// routes are plain routes to addrs.
func routes(addrs ...string) []Route {
	var out []Route
	for _, a := range addrs {
		out = append(out, Route{Addr: netip.MustParseAddr(a)})
	}
	return out
}

func startSpeaker(t *testing.T, r *router, password string) *Speaker {
	t.Helper()
	sp, err := Start(context.Background(), Options{
		ASN: 65001, RouterID: netip.MustParseAddr("127.0.0.1"), HoldTime: 9 * time.Second,
		NextHop4: netip.MustParseAddr("127.0.0.1"),
		Peers:    []Peer{{Addr: netip.MustParseAddr("127.0.0.2"), Port: r.port, ASN: 65000, Password: password}},
		Log:      zerolog.Nop(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sp.Stop(context.Background()) })
	return sp
}

func waitState(t *testing.T, sp *Speaker, state string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		p := sp.Peers(context.Background())
		if len(p) == 1 && p[0].State == state {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("session %+v, want %s", p, state)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestSpeaker: over a real BGP session with a TCP MD5 key, the router
// learns exactly the announced set, each a host route with the unit's
// address as next hop; a withdrawn address leaves it; what the router
// announces is not taken; Stop leaves the router with nothing at once.
func TestSpeaker(t *testing.T) {
	r := startRouter(t, "s3cret")
	sp := startSpeaker(t, r, "s3cret")
	if err := sp.SetAnnounced(routes("192.0.2.10", "192.0.2.11")); err != nil {
		t.Fatal(err)
	}
	waitState(t, sp, "established")
	if p := sp.Peers(context.Background())[0]; p.Since.IsZero() || p.ASN != 65000 || p.Address != "127.0.0.2" {
		t.Errorf("session view %+v", p)
	}
	r.waitRoutes("two VIPs", map[string]string{"192.0.2.10/32": "127.0.0.1, 65001", "192.0.2.11/32": "127.0.0.1, 65001"})

	// One withdrawn, one made a backup (the unit's AS prepended), one
	// of a family without a next hop skipped.
	backup := routes("192.0.2.11", "2001:db8::10", "198.51.100.12")
	backup[2].Backup = true
	if err := sp.SetAnnounced(backup); err != nil {
		t.Fatal(err)
	}
	r.waitRoutes("one withdrawn, one backup", map[string]string{"192.0.2.11/32": "127.0.0.1, 65001", "198.51.100.12/32": "127.0.0.1, 65001 65001 65001"})
	if got := sp.Announced(); !slices.Equal(got, []Route{{Addr: netip.MustParseAddr("192.0.2.11")}, {Addr: netip.MustParseAddr("198.51.100.12"), Backup: true}}) {
		t.Errorf("announced %v: an IPv6 address without an IPv6 next hop is skipped", got)
	}
	// The backup becomes a plain route: announced again, replacing it.
	if err := sp.SetAnnounced(routes("192.0.2.11", "198.51.100.12")); err != nil {
		t.Fatal(err)
	}
	r.waitRoutes("the backup made plain", map[string]string{"192.0.2.11/32": "127.0.0.1, 65001", "198.51.100.12/32": "127.0.0.1, 65001"})

	// The router's own routes are refused on import.
	nlri, _ := gbgp.NewIPAddrPrefix(netip.MustParsePrefix("10.99.0.0/16"))
	nh, _ := gbgp.NewPathAttributeNextHop(netip.MustParseAddr("127.0.0.2"))
	if _, err := r.s.AddPath(apiutil.AddPathRequest{Paths: []*apiutil.Path{{Family: gbgp.RF_IPv4_UC, Nlri: nlri,
		Attrs: []gbgp.PathAttributeInterface{gbgp.NewPathAttributeOrigin(0), nh}}}}); err != nil {
		t.Fatal(err)
	}
	// Wait until the router has sent it (its adj-out towards the unit),
	// then look in the unit's table.
	deadline := time.Now().Add(20 * time.Second)
	for {
		sent := 0
		_ = r.s.ListPath(apiutil.ListPathRequest{TableType: api.TableType_TABLE_TYPE_ADJ_OUT, Name: "127.0.0.1", Family: gbgp.RF_IPv4_UC},
			func(gbgp.NLRI, []*apiutil.Path) { sent++ })
		if sent > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the router never sent its route")
		}
		time.Sleep(20 * time.Millisecond)
	}
	var taken []string
	_ = sp.s.ListPath(apiutil.ListPathRequest{TableType: api.TableType_TABLE_TYPE_GLOBAL, Family: gbgp.RF_IPv4_UC},
		func(prefix gbgp.NLRI, paths []*apiutil.Path) {
			for _, p := range paths {
				if p.PeerAddress.IsValid() {
					taken = append(taken, prefix.String())
				}
			}
		})
	if len(taken) > 0 {
		t.Errorf("the unit took the router's routes %v", taken)
	}

	sp.Stop(context.Background())
	r.waitRoutes("after Stop", map[string]string{})
	if err := sp.SetAnnounced(nil); err == nil || !strings.Contains(err.Error(), "stopped") {
		t.Errorf("SetAnnounced after Stop: %v", err)
	}
}

// md5Failures reads the kernel's count of TCP segments refused for a
// wrong MD5 signature.
func md5Failures(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/net/netstat")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	for i := 0; i+1 < len(lines); i += 2 {
		names, values := strings.Fields(lines[i]), strings.Fields(lines[i+1])
		for j := range names {
			if names[j] == "TCPMD5Failure" && j < len(values) {
				n, _ := strconv.Atoi(values[j])
				return n
			}
		}
	}
	t.Skip("the kernel counts no TCPMD5Failure")
	return 0
}

// TestSpeakerWrongKey: a session whose TCP MD5 key the router does not
// share is refused by the router's kernel, so the router learns
// nothing; with the right key the same announcement arrives.
func TestSpeakerWrongKey(t *testing.T) {
	before := md5Failures(t)
	r := startRouter(t, "right")
	sp := startSpeaker(t, r, "wrong")
	if err := sp.SetAnnounced(routes("192.0.2.10")); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for md5Failures(t) == before {
		if time.Now().After(deadline) {
			t.Fatal("the wrong key's connection was never refused")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if p := sp.Peers(context.Background()); p[0].State == "established" || len(r.routes()) > 0 {
		t.Fatalf("with the wrong key: session %+v, router's routes %v", p, r.routes())
	}
	sp.Stop(context.Background())
	sp = startSpeaker(t, r, "right")
	if err := sp.SetAnnounced(routes("192.0.2.10")); err != nil {
		t.Fatal(err)
	}
	r.waitRoutes("with the right key", map[string]string{"192.0.2.10/32": "127.0.0.1, 65001"})
}
