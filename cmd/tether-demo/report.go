package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"text/tabwriter"
)

// result is what the demo saw and what Tether counted. --json writes it,
// for the demo's test to check rather than read prose.
type result struct {
	Port     string      `json:"port"` // the forwarder port: afxdp or tun
	VIPs     []vipResult `json:"vips"`
	Download download    `json:"download"`
	L7       l7Result    `json:"l7"`
}

// l7Result is the unit's account of the l7 VIP's connections (GET
// /v1/l7): migrated to a host, taken by the host's kernel (uploaded),
// failed there, and ended there (as the hosts have said so far).
type l7Result struct {
	Connections  int    `json:"connections"` // the client's through the l7 VIP
	Migrated     uint64 `json:"migrated"`
	Uploaded     uint64 `json:"uploaded"`
	UploadFailed uint64 `json:"upload_failed"`
	Ended        uint64 `json:"ended"`
}

type vipResult struct {
	Name    string `json:"name"`
	Address string `json:"address"`
	Mode    string `json:"mode"`
	// Connections the client opened through the VIP, and how many of
	// them failed.
	Connections int             `json:"connections"`
	Failed      int             `json:"failed"`
	FirstError  string          `json:"first_error,omitempty"`
	Backends    []backendResult `json:"backends"`
}

type backendResult struct {
	Name   string `json:"name"`
	Weight int    `json:"weight"`
	// Client: connections the client saw this backend answer.
	Client int `json:"client"`
	// Tether's counters for the backend (GET /v1/backends): flows it
	// sent here, packets and bytes toward the backend, and replies that
	// came back through the unit (none for ipip, tunnel and l7, whose
	// replies go straight to the client).
	NewFlows     uint64 `json:"new_flows"`
	Packets      uint64 `json:"packets"`
	Bytes        uint64 `json:"bytes"`
	ReplyPackets uint64 `json:"reply_packets"`
}

// download is the one large transfer, checked byte for byte.
type download struct {
	VIP     string `json:"vip"`
	Backend string `json:"backend"`
	// Predicted is the backend GET /v1/explain named for the download's
	// source port before it started.
	Predicted string `json:"predicted"`
	Want      int64  `json:"want_bytes"`
	Bytes     int64  `json:"bytes"`
	Intact    bool   `json:"intact"` // every byte arrived, SHA-256 as served
	Error     string `json:"error,omitempty"`
}

// tally combines the client's outcomes for one VIP and Tether's counters
// into the VIP's result.
func tally(v apiVIP, conns []connResult, counters []apiBackend) vipResult {
	r := vipResult{Name: v.Name, Address: net.JoinHostPort(v.Address, strconv.Itoa(int(v.Port))), Mode: v.Mode, Connections: len(conns)}
	index := map[string]int{}
	for _, b := range counters {
		if b.VIP != v.Name {
			continue
		}
		index[b.Name] = len(r.Backends)
		r.Backends = append(r.Backends, backendResult{Name: b.Name, Weight: b.Weight,
			NewFlows: b.NewFlows, Packets: b.Packets, Bytes: b.Bytes, ReplyPackets: b.ReplyPackets})
	}
	// A name Tether does not list (or none at all) still gets a row, so
	// that the counts cannot hide it.
	row := func(name string) *backendResult {
		i, ok := index[name]
		if !ok {
			i = len(r.Backends)
			index[name] = i
			r.Backends = append(r.Backends, backendResult{Name: name})
		}
		return &r.Backends[i]
	}
	for _, c := range conns {
		if c.Err != "" {
			r.Failed++
			if r.FirstError == "" {
				r.FirstError = fmt.Sprintf("source port %d: %s", c.Port, c.Err)
			}
			continue
		}
		row(c.Backend).Client++
	}
	return r
}

// problems lists what went wrong: the demo fails on any of them.
func (r *result) problems() []string {
	var ps []string
	for _, v := range r.VIPs {
		if v.Failed > 0 {
			ps = append(ps, fmt.Sprintf("%s: %d of %d connections failed (%s)", v.Name, v.Failed, v.Connections, v.FirstError))
		}
		for _, b := range v.Backends {
			if uint64(b.Client) != b.NewFlows {
				ps = append(ps, fmt.Sprintf("%s/%s: the client saw %d connections, Tether counted %d new flows", v.Name, b.Name, b.Client, b.NewFlows))
			}
		}
	}
	if l := r.L7; l.Migrated != uint64(l.Connections) || l.Uploaded != l.Migrated || l.UploadFailed != 0 {
		ps = append(ps, fmt.Sprintf("l7: %d connections, the unit migrated %d, the hosts took %d, %d failed", l.Connections, l.Migrated, l.Uploaded, l.UploadFailed))
	}
	if d := r.Download; !d.Intact {
		ps = append(ps, fmt.Sprintf("the download through %s did not arrive intact: %d of %d bytes (%s)", d.VIP, d.Bytes, d.Want, d.Error))
	} else if d.Backend != d.Predicted {
		ps = append(ps, fmt.Sprintf("the download through %s came from %s; Tether said %s would serve it", d.VIP, d.Backend, d.Predicted))
	}
	return ps
}

// print writes the final table.
func (r *result) print(w io.Writer) {
	fmt.Fprintln(w)
	fmt.Fprintf(w, "What happened (forwarder port %s):\n", r.Port)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  VIP\tMODE\tBACKEND\tWEIGHT\tCLIENT SAW\tNEW FLOWS\tPACKETS\tBYTES\tREPLY PKTS")
	for _, v := range r.VIPs {
		vip, mode := v.Name, v.Mode
		for _, b := range v.Backends {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\n", vip, mode, b.Name, b.Weight, b.Client, b.NewFlows, b.Packets, b.Bytes, b.ReplyPackets)
			vip, mode = "", "" // once per VIP
		}
		if v.Failed > 0 {
			fmt.Fprintf(tw, "  \t\tfailed\t\t%d\n", v.Failed)
		}
	}
	tw.Flush()
	fmt.Fprintln(w, "  CLIENT SAW: connections the backend answered, the download included. NEW FLOWS, PACKETS, BYTES (toward")
	fmt.Fprintln(w, "  the backend) and REPLY PKTS (back through the unit; ipip's, tunnel's and l7's replies go direct): Tether's counters,")
	fmt.Fprintln(w, "  GET /v1/backends. l7: the unit accepted each connection, read its request, and moved the live connection")
	fmt.Fprintln(w, "  into the host its path's rule names (TCP_REPAIR, by the host's agent); the host answered the client itself.")
	l := r.L7
	fmt.Fprintf(w, "  l7 (GET /v1/l7): %d connections migrated, %d taken by the hosts' kernels, %d failed, %d ended on the hosts so far\n",
		l.Migrated, l.Uploaded, l.UploadFailed, l.Ended)
	d := r.Download
	if d.Intact {
		fmt.Fprintf(w, "  %d MiB download through %s: arrived intact (SHA-256 checked), served by %s (Tether had named %s beforehand)\n", d.Want>>20, d.VIP, d.Backend, d.Predicted)
	} else {
		fmt.Fprintf(w, "  %d MiB download through %s: DAMAGED, %d bytes (%s)\n", d.Want>>20, d.VIP, d.Bytes, d.Error)
	}
}

// writeJSON writes the result to path.
func (r *result) writeJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("--json: %w", err)
	}
	return nil
}
