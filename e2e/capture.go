package e2e

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

// ReadTCPSegments calls fn with each IPv4 TCP segment of an Ethernet
// capture file (tcpdump -w) and the time it was captured: the
// benchmarks' hop splits read their namespaces' captures with it.
func ReadTCPSegments(path string, fn func(at time.Time, tcp *layers.TCP)) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("capture: %w", err)
	}
	defer f.Close()
	r, err := pcapgo.NewReader(f)
	if err != nil {
		return fmt.Errorf("capture: %s: %w", path, err)
	}
	if r.LinkType() != layers.LinkTypeEthernet {
		return fmt.Errorf("capture: %s: link type %s, want Ethernet", path, r.LinkType())
	}
	for {
		data, ci, err := r.ReadPacketData()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("capture: %s: %w", path, err)
		}
		p := gopacket.NewPacket(data, layers.LayerTypeEthernet, gopacket.DecodeOptions{Lazy: true, NoCopy: true})
		if tcp, ok := p.Layer(layers.LayerTypeTCP).(*layers.TCP); ok && p.Layer(layers.LayerTypeIPv4) != nil {
			fn(ci.Timestamp, tcp)
		}
	}
}

// Capture starts tcpdump on interface ifc of namespace ns, writing the
// first 128 bytes of each frame filter keeps to path, in immediate mode
// (a segment is timed when it passes, not when a buffer fills), and
// returns once it listens. Stop the process to have it write out what
// it holds; the network's Close stops it otherwise.
func (n *Net) Capture(ns, ifc, path, filter string) (*Proc, error) {
	p, err := n.Start(ns, "tcpdump "+filepath.Base(path), nil, "tcpdump", "-i", ifc, "-n", "--immediate-mode", "-s", "128", "-w", path, filter)
	if err != nil {
		return nil, err
	}
	if err := p.WaitFor("listening on", 10*time.Second); err != nil {
		return nil, fmt.Errorf("capture on %s: %w", ifc, err)
	}
	return p, nil
}

// HopLine describes one hop's times over the connections a capture saw
// whole, "what: median …, p90 …, p99 …, max …", each formatted by show.
// It sorts d, which must not be empty.
func HopLine(what string, d []time.Duration, show func(time.Duration) string) string {
	slices.Sort(d)
	at := func(q float64) string {
		i := int(q*float64(len(d))+0.5) - 1
		return show(d[min(max(i, 0), len(d)-1)])
	}
	return fmt.Sprintf("%s: median %s, p90 %s, p99 %s, max %s", what, at(0.5), at(0.9), at(0.99), show(d[len(d)-1]))
}
