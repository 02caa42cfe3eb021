package main

import (
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/gopacket/gopacket/layers"

	"github.com/tetherlb/tether/e2e"
)

// hopCapture records every handshake segment (SYN, SYN-ACK) toward port
// 80 at the router's client-side interface and on every host, so that a
// probe's handshake splits into hops: through the router and the unit
// toward the host, the host itself, and back through the unit and the
// router. NAT on both sides keeps sequence numbers, so the client's
// initial sequence number names the handshake at every point.
type hopCapture struct {
	client string   // the router's client-side capture
	hosts  []string // one per host
	procs  []*e2e.Proc
}

// hopFilter keeps the handshakes' segments only.
const hopFilter = "tcp[tcpflags] & tcp-syn != 0 and tcp port 80"

// startHops starts the captures (tcpdump, in immediate mode: a segment
// is timed when it passes, not when a buffer fills); split stops them,
// and the network's Close whatever split did not.
func startHops(lb *e2e.LB, dir string) (*hopCapture, error) {
	h := &hopCapture{client: filepath.Join(dir, "router-client.pcap")}
	start := func(ns, ifc, path string) error {
		p, err := lb.Capture(ns, ifc, path, hopFilter)
		if err != nil {
			return fmt.Errorf("hops: %w", err)
		}
		h.procs = append(h.procs, p)
		return nil
	}
	if err := start(lb.Router, "rc0", h.client); err != nil {
		return nil, err
	}
	for i, ns := range lb.Backends {
		path := filepath.Join(dir, fmt.Sprintf("host-%d.pcap", i))
		if err := start(ns, "e0", path); err != nil {
			return nil, err
		}
		h.hosts = append(h.hosts, path)
	}
	return h, nil
}

// handshake is when one handshake's segments passed the capture points.
type handshake struct {
	clientSYN, hostSYN, hostSYNACK, clientSYNACK time.Time
}

// split stops the captures, reads them and reports, for the probes'
// handshakes (the client's ports in ports), the median, p90, p99 and
// maximum of each hop, as report notes.
func (h *hopCapture) split(ports map[int]bool) ([]string, error) {
	for _, p := range h.procs {
		p.Stop() // tcpdump writes out what it holds and closes the file
	}
	hs := map[uint32]*handshake{}
	get := func(isn uint32) *handshake {
		if hs[isn] == nil {
			hs[isn] = &handshake{}
		}
		return hs[isn]
	}
	first := func(t *time.Time, at time.Time) {
		if t.IsZero() {
			*t = at
		}
	}
	// The client's side: its SYN in, the SYN-ACK out to it.
	err := e2e.ReadTCPSegments(h.client, func(at time.Time, tcp *layers.TCP) {
		switch {
		case tcp.SYN && !tcp.ACK && ports[int(tcp.SrcPort)]:
			first(&get(tcp.Seq).clientSYN, at)
		case tcp.SYN && tcp.ACK && ports[int(tcp.DstPort)]:
			first(&get(tcp.Ack-1).clientSYNACK, at)
		}
	})
	if err != nil {
		return nil, err
	}
	for _, path := range h.hosts {
		err := e2e.ReadTCPSegments(path, func(at time.Time, tcp *layers.TCP) {
			switch {
			case tcp.SYN && !tcp.ACK:
				if x := hs[tcp.Seq]; x != nil {
					first(&x.hostSYN, at)
				}
			case tcp.SYN && tcp.ACK:
				if x := hs[tcp.Ack-1]; x != nil {
					first(&x.hostSYNACK, at)
				}
			}
		})
		if err != nil {
			return nil, err
		}
	}
	var toward, host, back, total []time.Duration
	for _, x := range hs {
		if x.clientSYN.IsZero() || x.hostSYN.IsZero() || x.hostSYNACK.IsZero() || x.clientSYNACK.IsZero() {
			continue
		}
		toward = append(toward, x.hostSYN.Sub(x.clientSYN))
		host = append(host, x.hostSYNACK.Sub(x.hostSYN))
		back = append(back, x.clientSYNACK.Sub(x.hostSYNACK))
		total = append(total, x.clientSYNACK.Sub(x.clientSYN))
	}
	if len(total) == 0 {
		return nil, errors.New("hops: no probe handshake was seen whole")
	}
	line := func(what string, d []time.Duration) string { return e2e.HopLine(what, d, ms) }
	return []string{
		fmt.Sprintf("the probes' handshakes by hop (%d seen whole at the router and a host, of %d probes)", len(total), len(ports)),
		line("the SYN from the router's client side to the host (router and unit)", toward),
		line("the host's SYN-ACK", host),
		line("the SYN-ACK from the host to the router's client side (unit and router)", back),
		line("the whole handshake at the router", total),
	}, nil
}
