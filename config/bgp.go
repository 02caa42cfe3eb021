package config

import (
	"fmt"
	"net/netip"
	"slices"
	"time"
)

// BGP has the unit announce its VIPs to routers (ctlplane/bgp): each VIP
// address, as a host route (/32 or /128) with the unit's address as next
// hop, while the unit can serve it, so that routers send it traffic
// (several units announcing one VIP: equal-cost multipath). Without the
// section nothing is announced and routes to the VIPs are the network's
// business.
//
// The section is fixed at start: a reload that changes it is refused (a
// restart applies it).
type BGP struct {
	// ASN is the unit's autonomous system number (required; 4-octet
	// numbers are fine).
	ASN uint32 `mapstructure:"asn"`
	// RouterID is the unit's BGP identifier, an IPv4 address; default
	// unit.address4.
	RouterID string `mapstructure:"router_id"`
	// HoldTime is how long a peer keeps the unit's routes after the last
	// message it heard (keepalives go every third of it): the bound on a
	// dead unit's routes when its peers must find out on their own.
	// Default 9s; 3s to 65535s.
	HoldTime time.Duration `mapstructure:"hold_time"`
	// ForwarderGrace is how long the VIPs stay announced while the
	// forwarder is gone (the control process restarts a dead one in a
	// fraction of a second): a longer outage withdraws them. Default 3s.
	ForwarderGrace time.Duration `mapstructure:"forwarder_grace"`
	// Peers are the routers the unit opens BGP sessions to. The unit
	// dials them and does not listen.
	Peers []BGPPeer `mapstructure:"peers"`

	routerID netip.Addr
}

// BGPPeer is one router.
type BGPPeer struct {
	// Address is the router's address on the unit's link.
	Address string `mapstructure:"address"`
	// ASN is the router's autonomous system number: another than the
	// unit's for external BGP, the same for internal.
	ASN uint32 `mapstructure:"asn"`
	// Port is the router's BGP port; default 179.
	Port int `mapstructure:"port"`
	// PasswordFile holds the session's TCP MD5 key (RFC 2385), which the
	// router must have too: 1 to 80 bytes, a trailing newline not
	// included. Required: a BGP session steers the VIPs' traffic, and
	// nobody but the router may speak on it.
	PasswordFile string `mapstructure:"password_file"`

	addr netip.Addr
}

// Defaults and bounds of the bgp section.
const (
	DefaultBGPPort           = 179
	DefaultBGPHoldTime       = 9 * time.Second
	MinBGPHoldTime           = 3 * time.Second
	MaxBGPHoldTime           = 65535 * time.Second
	DefaultBGPForwarderGrace = 3 * time.Second
	MaxBGPPeers              = 64
)

func (b *BGP) check(p *problems, u *Unit) {
	if b.ASN == 0 || b.ASN == 23456 || b.ASN == 0xffffffff {
		p.Add("bgp.asn", b.ASN, "want an AS number from 1 to 4294967294 (not 23456, AS_TRANS)")
	}
	if b.RouterID == "" {
		b.routerID = u.addr4
		if !b.routerID.IsValid() {
			p.Add("bgp.router_id", b.RouterID, "required without unit.address4: an IPv4 address that names the unit to its peers")
		}
	} else if a, err := netip.ParseAddr(b.RouterID); err != nil || !a.Is4() || a.IsUnspecified() {
		p.Add("bgp.router_id", b.RouterID, "want an IPv4 address, e.g. the unit's own")
	} else {
		b.routerID = a
	}
	if b.HoldTime == 0 {
		b.HoldTime = DefaultBGPHoldTime
	}
	if b.HoldTime < MinBGPHoldTime || b.HoldTime > MaxBGPHoldTime || b.HoldTime%time.Second != 0 {
		p.Add("bgp.hold_time", b.HoldTime, "want whole seconds from %s to %s (RFC 4271)", MinBGPHoldTime, MaxBGPHoldTime)
	}
	if b.ForwarderGrace == 0 {
		b.ForwarderGrace = DefaultBGPForwarderGrace
	}
	if b.ForwarderGrace < 0 || b.ForwarderGrace > time.Minute {
		p.Add("bgp.forwarder_grace", b.ForwarderGrace, "want from 0s to 1m")
	}
	if len(b.Peers) == 0 || len(b.Peers) > MaxBGPPeers {
		p.Add("bgp.peers", len(b.Peers), "want 1 to %d routers", MaxBGPPeers)
	}
	seen := map[netip.Addr]int{}
	for i := range b.Peers {
		peer := &b.Peers[i]
		key := fmt.Sprintf("bgp.peers[%d]", i)
		peer.addr = parseAddr(p, key+".address", peer.Address, 0, false)
		if j, dup := seen[peer.addr]; dup && peer.addr.IsValid() {
			p.Add(key+".address", peer.Address, "also bgp.peers[%d]'s", j)
		}
		seen[peer.addr] = i
		if peer.addr.IsValid() && !unitHasFamily(u, peer.addr) {
			p.Add(key+".address", peer.Address, "the unit has no IPv%d address (unit.address%d) to reach it from", family(peer.addr), family(peer.addr))
		}
		if peer.ASN == 0 || peer.ASN == 23456 || peer.ASN == 0xffffffff {
			p.Add(key+".asn", peer.ASN, "want an AS number from 1 to 4294967294 (not 23456, AS_TRANS)")
		}
		if peer.Port == 0 {
			peer.Port = DefaultBGPPort
		}
		if peer.Port < 1 || peer.Port > 65535 {
			p.Add(key+".port", peer.Port, "want a TCP port")
		}
		if peer.PasswordFile == "" {
			p.Add(key+".password_file", peer.PasswordFile, "required: a file with the session's TCP MD5 key, which the router has too")
		}
	}
}

func unitHasFamily(u *Unit, a netip.Addr) bool {
	if a.Is4() {
		return u.addr4.IsValid()
	}
	return u.addr6.IsValid()
}

// RouterIDAddr returns the BGP identifier, once checked.
func (b *BGP) RouterIDAddr() netip.Addr { return b.routerID }

// Addr returns the router's address, once checked.
func (p *BGPPeer) Addr() netip.Addr { return p.addr }

// Equal reports whether c and o configure the same speaker (either may
// be nil), once checked.
func (b *BGP) Equal(o *BGP) bool {
	if b == nil || o == nil {
		return b == o
	}
	return b.ASN == o.ASN && b.routerID == o.routerID && b.HoldTime == o.HoldTime &&
		b.ForwarderGrace == o.ForwarderGrace && slices.Equal(b.Peers, o.Peers)
}

// clone returns a deep copy of b (nil for nil).
func (b *BGP) clone() *BGP {
	if b == nil {
		return nil
	}
	out := *b
	out.Peers = slices.Clone(b.Peers)
	return &out
}
