package main

import (
	"fmt"
	"net/netip"
	"net/url"

	"github.com/tetherlb/tether/internal/localapi"
)

// What the demo reads from tetherd's admin API. It decodes the JSON into
// these small types, holding only the fields it prints or checks, rather
// than importing the daemon's report types: those are the admin API's
// implementation and move between packages; the JSON is the contract.

// apiVIP is one element of GET /v1/vips.
type apiVIP struct {
	Name     string `json:"name"`
	Address  string `json:"address"`
	Port     uint16 `json:"port"`
	Protocol string `json:"protocol"`
	Mode     string `json:"mode"`
	Removed  bool   `json:"removed"`
}

// apiBackend is one element of GET /v1/backends: a backend of one VIP
// with Tether's counters for it.
type apiBackend struct {
	VIP          string `json:"vip"`
	Name         string `json:"name"`
	Weight       int    `json:"weight"`
	NewFlows     uint64 `json:"new_flows"`
	Packets      uint64 `json:"packets"`
	Bytes        uint64 `json:"bytes"`
	ReplyPackets uint64 `json:"reply_packets"`
}

// apiExplanation is GET /v1/explain's answer: the backend a flow would
// get.
type apiExplanation struct {
	Backend  string `json:"backend"`
	Reason   string `json:"reason"`
	Existing bool   `json:"existing_flow"`
}

// admin is tetherd's admin API.
type admin struct{ c *localapi.Client }

func newAdmin(socket string) admin { return admin{localapi.NewClient(socket, "tetherd")} }

func (a admin) vips() ([]apiVIP, error) {
	var all []apiVIP
	if err := a.c.Do("GET", "/v1/vips", nil, &all); err != nil {
		return nil, fmt.Errorf("GET /v1/vips: %w", err)
	}
	var vs []apiVIP
	for _, v := range all {
		if !v.Removed {
			vs = append(vs, v)
		}
	}
	return vs, nil
}

func (a admin) backends() ([]apiBackend, error) {
	var bs []apiBackend
	if err := a.c.Do("GET", "/v1/backends", nil, &bs); err != nil {
		return nil, fmt.Errorf("GET /v1/backends: %w", err)
	}
	return bs, nil
}

// apiL7 is what the demo reads of GET /v1/l7: the acceptor's
// migrations.
type apiL7 struct {
	Stats struct {
		Migrated     uint64 `json:"migrated"`
		Uploaded     uint64 `json:"uploaded"`
		UploadFailed uint64 `json:"upload_failed"`
		Ended        uint64 `json:"ended"`
	} `json:"stats"`
}

func (a admin) l7() (apiL7, error) {
	var v apiL7
	if err := a.c.Do("GET", "/v1/l7", nil, &v); err != nil {
		return v, fmt.Errorf("GET /v1/l7: %w", err)
	}
	return v, nil
}

// streamsUp counts the hosts whose stream to the unit is up (GET
// /v1/streams).
func (a admin) streamsUp() (int, error) {
	var v struct {
		Streams []struct {
			State string `json:"state"`
		} `json:"streams"`
	}
	if err := a.c.Do("GET", "/v1/streams", nil, &v); err != nil {
		return 0, fmt.Errorf("GET /v1/streams: %w", err)
	}
	up := 0
	for _, s := range v.Streams {
		if s.State == "up" {
			up++
		}
	}
	return up, nil
}

// choose asks which backend a new flow from src to the VIP would get.
// Asked before the flow exists, the answer is the VIP's Maglev choice.
// (One question costs a round trip through every forwarding worker, up to
// its idle wait, so the demo asks it for one connection, not for all.)
func (a admin) choose(v apiVIP, src netip.AddrPort) (string, error) {
	dst, err := netip.ParseAddr(v.Address)
	if err != nil {
		return "", fmt.Errorf("VIP %s: address %q: %w", v.Name, v.Address, err)
	}
	q := url.Values{"proto": {v.Protocol}, "src": {src.String()}, "dst": {netip.AddrPortFrom(dst, v.Port).String()}}
	var e apiExplanation
	if err := a.c.Do("GET", "/v1/explain?"+q.Encode(), nil, &e); err != nil {
		return "", fmt.Errorf("GET /v1/explain for %s: %w", src, err)
	}
	if e.Existing {
		return "", fmt.Errorf("explain %s -> %s: a flow exists already, so the answer is not Maglev's choice", src, v.Name)
	}
	if e.Backend == "" {
		return "", fmt.Errorf("explain %s -> %s: no backend: %s", src, v.Name, e.Reason)
	}
	return e.Backend, nil
}
