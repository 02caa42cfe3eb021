package agent

import (
	"fmt"
	"net"
	"net/http"
	"strconv"

	"github.com/tetherlb/tether/agent/streams"
	"github.com/tetherlb/tether/api/hostpb"
	"github.com/tetherlb/tether/internal/localapi"
	"github.com/tetherlb/tether/internal/mtls"
)

// StreamsConfig is the agent's end of the host streams (issue 13): a
// gRPC stream with mutual TLS to each unit listed.
type StreamsConfig struct {
	// Units are the units' stream listeners; none (the default) opens
	// no stream.
	Units []StreamUnit `mapstructure:"units"`
	TLS   StreamTLS    `mapstructure:"tls"`
}

// StreamUnit is one unit's stream listener.
type StreamUnit struct {
	// Name is the unit's unit.name; its certificate must carry it, as a
	// DNS name, for the agent to accept the unit.
	Name string `mapstructure:"name"`
	// Address is the unit's hosts.listen as the agent reaches it,
	// host:port.
	Address string `mapstructure:"address"`
}

// StreamTLS names the agent's PEM files: the CA that signs the units'
// certificates, and this host's certificate (which must name host.id,
// as `tetherd certs --host ID` makes it) and key.
type StreamTLS struct {
	CA   string `mapstructure:"ca"`
	Cert string `mapstructure:"cert"`
	Key  string `mapstructure:"key"`
}

func (s *StreamsConfig) check(p *problems) {
	files := []struct{ key, v string }{{"streams.tls.ca", s.TLS.CA}, {"streams.tls.cert", s.TLS.Cert}, {"streams.tls.key", s.TLS.Key}}
	if len(s.Units) == 0 {
		for _, f := range files {
			if f.v != "" {
				p.Add(f.key, f.v, "needs streams.units")
			}
		}
		return
	}
	names := map[string]int{}
	for i, u := range s.Units {
		key := fmt.Sprintf("streams.units[%d]", i)
		if err := hostpb.ValidUnitName(u.Name); err != nil {
			p.Add(key+".name", u.Name, "want the unit's unit.name (1 to %d characters, no spaces)", hostpb.MaxUnitName)
		} else if j, dup := names[u.Name]; dup {
			p.Add(key+".name", u.Name, "also the name of streams.units[%d]", j)
		}
		names[u.Name] = i
		if h, port, err := net.SplitHostPort(u.Address); err != nil || h == "" || !validPort(port) {
			p.Add(key+".address", u.Address, "want host:port of the unit's hosts.listen, e.g. 10.0.0.1:7320")
		}
	}
	for _, f := range files {
		if f.v == "" {
			p.Add(f.key, f.v, "required with streams.units: the streams use mutual TLS only (tetherd certs makes a test CA)")
		}
	}
}

func validPort(s string) bool {
	n, err := strconv.Atoi(s)
	return err == nil && n > 0 && n <= 65535
}

// NewStreams prepares the streams the configuration lists (nil when it
// lists none). It reads the TLS files, and refuses a certificate that
// does not name host.id: such an agent would only be refused by every
// unit.
func (c *Config) NewStreams(opts streams.Options) (*streams.Streams, error) {
	if len(c.Streams.Units) == 0 {
		return nil, nil
	}
	t := c.Streams.TLS
	cfg, err := mtls.Client(mtls.Files{CA: t.CA, Cert: t.Cert, Key: t.Key}, uint32(c.Host.ID))
	if err != nil {
		return nil, fmt.Errorf("streams.tls.%w", err)
	}
	opts.Host, opts.TLS = uint32(c.Host.ID), cfg
	for _, u := range c.Streams.Units {
		opts.Units = append(opts.Units, streams.Unit{Name: u.Name, Address: u.Address})
	}
	return streams.New(opts)
}

// AttachStreams makes s the agent's streams, which its API shows at
// GET /v1/streams.
func (a *Agent) AttachStreams(s *streams.Streams) { a.streams.Store(s) }

// StreamsView is GET /v1/streams: the agent's stream to each unit.
type StreamsView struct {
	Host uint32 `json:"host"`
	// Boot is this agent's boot ID, which the units show as the host's.
	Boot    uint64           `json:"boot,omitempty"`
	Streams []streams.Status `json:"streams"`
}

func (a *Agent) streamRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/streams", func(w http.ResponseWriter, r *http.Request) {
		v := StreamsView{Host: a.host, Streams: []streams.Status{}}
		if s := a.streams.Load(); s != nil {
			v.Boot, v.Streams = s.Boot(), s.Status()
		}
		localapi.WriteJSON(w, http.StatusOK, v)
	})
}
