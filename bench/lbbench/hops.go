package main

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"time"

	"github.com/gopacket/gopacket/layers"

	"github.com/tetherlb/tether/e2e"
)

// l7Hops splits the migrated connections' time to first byte into hops
// (--hops, Tether's l7 rows): tcpdump at the client's interface and on
// every host's sees the client's SYN and request leave, the Migrate
// reach the host (the first segment with data the unit sends on the
// host's stream after the request: connections come one at a time), the
// response leave the host and reach the client. The unit's part is from
// the request leaving the client to the Migrate at the host; the host's,
// from the Migrate to its response.
type l7Hops struct {
	client string   // the client's capture
	hosts  []string // one per host
	procs  []*e2e.Proc
}

// hostStreamPort is the unit's hosts.listen port in the l7 rows.
const hostStreamPort = 7320

func startL7Hops(lb *e2e.LB, dir string) (*l7Hops, error) {
	h := &l7Hops{client: filepath.Join(dir, "hops-client.pcap")}
	start := func(ns, ifc, path, filter string) error {
		p, err := lb.Capture(ns, ifc, path, filter)
		if err != nil {
			return fmt.Errorf("hops: %w", err)
		}
		h.procs = append(h.procs, p)
		return nil
	}
	if err := start(lb.Client, "c0", h.client, fmt.Sprintf("tcp and host %s and port 80", vip)); err != nil {
		return nil, err
	}
	for i, ns := range lb.Backends {
		path := filepath.Join(dir, fmt.Sprintf("hops-host-%d.pcap", i))
		filter := fmt.Sprintf("tcp and ((src host %s and src port 80) or (src host %s and src port %d))", vip, lb.UnitIP, hostStreamPort)
		if err := start(ns, "e0", path, filter); err != nil {
			return nil, err
		}
		h.hosts = append(h.hosts, path)
	}
	return h, nil
}

// l7Conn is when one migrated connection's segments passed the capture
// points.
type l7Conn struct {
	syn, request, migrate, hostResponse, response time.Time
}

// split stops the captures and reports each hop's median, p90, p99 and
// maximum over the connections seen whole, as report notes.
func (h *l7Hops) split() ([]string, error) {
	for _, p := range h.procs {
		p.Stop() // tcpdump writes out what it holds and closes the file
	}
	conns := map[uint16]*l7Conn{}
	get := func(port layers.TCPPort) *l7Conn {
		if conns[uint16(port)] == nil {
			conns[uint16(port)] = &l7Conn{}
		}
		return conns[uint16(port)]
	}
	first := func(t *time.Time, at time.Time) {
		if t.IsZero() {
			*t = at
		}
	}
	err := e2e.ReadTCPSegments(h.client, func(at time.Time, tcp *layers.TCP) {
		switch {
		case tcp.DstPort == 80 && tcp.SYN && !tcp.ACK:
			first(&get(tcp.SrcPort).syn, at)
		case tcp.DstPort == 80 && len(tcp.Payload) > 0:
			first(&get(tcp.SrcPort).request, at)
		case tcp.SrcPort == 80 && len(tcp.Payload) > 0:
			first(&get(tcp.DstPort).response, at)
		}
	})
	if err != nil {
		return nil, err
	}
	var stream []time.Time // the unit's segments with data on the host streams
	for _, path := range h.hosts {
		err := e2e.ReadTCPSegments(path, func(at time.Time, tcp *layers.TCP) {
			switch {
			case tcp.SrcPort == hostStreamPort && len(tcp.Payload) > 0:
				stream = append(stream, at)
			case tcp.SrcPort == 80 && len(tcp.Payload) > 0:
				if c := conns[uint16(tcp.DstPort)]; c != nil {
					first(&c.hostResponse, at)
				}
			}
		})
		if err != nil {
			return nil, err
		}
	}
	slices.SortFunc(stream, func(a, b time.Time) int { return a.Compare(b) })
	var handshake, unitPart, hostPart, back, total []time.Duration
	for _, c := range conns {
		if c.syn.IsZero() || c.request.IsZero() || c.hostResponse.IsZero() || c.response.IsZero() {
			continue
		}
		i, _ := slices.BinarySearchFunc(stream, c.request, func(a, b time.Time) int { return a.Compare(b) })
		if i == len(stream) || stream[i].After(c.hostResponse) {
			continue
		}
		c.migrate = stream[i]
		handshake = append(handshake, c.request.Sub(c.syn))
		unitPart = append(unitPart, c.migrate.Sub(c.request))
		hostPart = append(hostPart, c.hostResponse.Sub(c.migrate))
		back = append(back, c.response.Sub(c.hostResponse))
		total = append(total, c.response.Sub(c.syn))
	}
	if len(total) == 0 {
		return nil, errors.New("hops: no migrated connection was seen whole")
	}
	micros := func(d time.Duration) string { return fmt.Sprintf("%d µs", d.Microseconds()) }
	line := func(what string, d []time.Duration) string { return e2e.HopLine(what, d, micros) }
	return []string{
		fmt.Sprintf("time to first byte by hop, migrated connections (%d seen whole at the client and a host)", len(total)),
		line("the client's SYN to its request leaving (the handshake, the SYN-ACK from the worker)", handshake),
		line("the request leaving the client to the Migrate at the host (router, worker, control process, host stream)", unitPart),
		line("the Migrate at the host to its response leaving (agent, upload, hand-off, application)", hostPart),
		line("the response from the host to the client (router)", back),
		line("the client's SYN to the response (tcpdump's times)", total),
	}, nil
}
