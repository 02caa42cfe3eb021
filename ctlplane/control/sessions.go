package control

import (
	"context"
	"encoding/hex"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/tetherlb/tether/api/atompb"
	pb "github.com/tetherlb/tether/api/hostpb"
	"github.com/tetherlb/tether/api/unit"
	"github.com/tetherlb/tether/ctlplane/hosts"
)

// Session atoms (issue 15, seed S1 FIG. 21): the sessions a host's
// agent reports to this unit become atoms whose host is the host (by
// ID: "host/7"), so that any unit sends a client with a session to the
// host that holds it (FIG. 26), even after the unit that learnt it died.

// sessionHostPrefix names a host in a session atom's host.
const sessionHostPrefix = "host/"

func sessionHost(id uint32) string { return sessionHostPrefix + strconv.FormatUint(uint64(id), 10) }

func addrPort(b []byte, port uint32) string {
	a, _ := netip.AddrFromSlice(b)
	return netip.AddrPortFrom(a.Unmap(), uint16(port)).String()
}

func addrText(b []byte) string {
	a, _ := netip.AddrFromSlice(b)
	return a.Unmap().String()
}

// sessionKey is a session's atom key: session/tcp/CLIENT>VIP,
// session/ip/CLIENT (>VIP when scoped to one VIP), or
// session/app/VIP/KEY (the key in hex: it may be any bytes).
func sessionKey(s *pb.Session) string {
	switch s.GetKind() {
	case pb.SessionKind_SESSION_KIND_TCP:
		return atompb.KindSession + "tcp/" + addrPort(s.GetClient(), s.GetClientPort()) + ">" + addrPort(s.GetVip(), s.GetVipPort())
	case pb.SessionKind_SESSION_KIND_CLIENT_IP:
		k := atompb.KindSession + "ip/" + addrText(s.GetClient())
		if len(s.GetVip()) > 0 {
			k += ">" + addrPort(s.GetVip(), s.GetVipPort())
		}
		return k
	default:
		return atompb.KindSession + "app/" + addrPort(s.GetVip(), s.GetVipPort()) + "/" + hex.EncodeToString(s.GetKey())
	}
}

// sessionTimeout is how long a session atom outlives its adder: a
// client-IP session its idle timeout; other sessions the established
// TCP timeout. The host's agent resends its sessions to another unit
// well within either when its unit dies.
func (c *Control) sessionTimeout(s *pb.Session) time.Duration {
	if s.GetKind() == pb.SessionKind_SESSION_KIND_CLIENT_IP {
		return time.Duration(s.GetIdleTimeoutMs()) * time.Millisecond
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return max(c.running.Forwarder.Flows.Timeouts.TCPEstablished, time.Second)
}

// onSessions turns a host's session reports into atoms
// (hosts.Options.OnSessions): established sessions are added, ended ones
// deleted, and a resync replaces every session atom of the host this
// unit holds. An empty resync means the host reports to another unit
// now, which adds them anew: nothing to do here.
func (c *Control) onSessions(host uint32, b hosts.SessionBatch) {
	mgr := c.cl.atoms.Load()
	if mgr == nil {
		return
	}
	h := sessionHost(host)
	add := func(s *pb.Session) string {
		key := sessionKey(s)
		if _, err := mgr.Add(key, h, []byte(s.GetApplication()), c.sessionTimeout(s), 0); err != nil {
			c.log.Warn().Err(err).Str("key", key).Uint32("host", host).Msg("session atom not added")
		}
		return key
	}
	if b.Resync {
		if len(b.Up) == 0 {
			return
		}
		keep := make(map[string]bool, len(b.Up))
		for _, s := range b.Up {
			keep[add(s)] = true
		}
		for _, key := range mgr.Keys(atompb.KindSession, h) {
			if !keep[key] {
				mgr.Delete(key)
			}
		}
		return
	}
	for _, s := range b.Down {
		key := sessionKey(s)
		// Another host may have the key by now (a client moved): only
		// this host's version ends.
		if a, ok := mgr.Get(key); ok && a.Host == h {
			mgr.Delete(key)
		}
	}
	for _, s := range b.Up {
		add(s)
	}
}

// sessionBackend looks for a session of the flow's client (scoped to
// its VIP first, then any) and returns the backend of vip on the host
// that holds it, when that host has one that takes new flows (FIG. 26:
// a known session goes to its host if healthy; otherwise health and load
// choose).
func (c *Control) sessionBackend(ctx context.Context, vip string, k *unit.FlowKey) (uint32, bool) {
	mgr := c.cl.atoms.Load()
	if mgr == nil || c.hosts == nil {
		return 0, false
	}
	client := k.SrcAddr().String()
	for _, key := range []string{
		atompb.KindSession + "ip/" + client + ">" + netip.AddrPortFrom(k.DstAddr(), k.DstPort).String(),
		atompb.KindSession + "ip/" + client,
	} {
		a, found, err := mgr.Query(ctx, key)
		if err != nil || !found || a.Zombie {
			continue
		}
		id, err := strconv.ParseUint(strings.TrimPrefix(a.Host, sessionHostPrefix), 10, 32)
		if err != nil || !strings.HasPrefix(a.Host, sessionHostPrefix) {
			continue
		}
		if b, ok := c.backendOnHost(vip, uint32(id)); ok {
			return b, true
		}
	}
	return 0, false
}

// backendOnHost returns the forwarder ID of a backend of vip whose
// address is host's and that takes new flows.
func (c *Control) backendOnHost(vip string, host uint32) (uint32, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := range c.running.VIPs {
		v := &c.running.VIPs[i]
		if v.Name != vip {
			continue
		}
		for j := range v.Backends {
			b := &v.Backends[j]
			if b.StateValue() != unit.StateActive {
				continue
			}
			if h, _, ok := c.hosts.HostOf(b.Addr()); !ok || h != host {
				continue
			}
			if id, ok := c.ids.Backends[unit.BackendKey{VIP: vip, Backend: b.Name}]; ok {
				return id, true
			}
		}
	}
	return 0, false
}
