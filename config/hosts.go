package config

import "net/netip"

// Hosts configures the unit's end of the host streams (issue 13): a gRPC
// listener where host agents keep a stream each, with mutual TLS from
// the operator's CA.
type Hosts struct {
	// Listen is the stream listener's address:port; "" (the default)
	// runs no listener.
	Listen string `mapstructure:"listen"`
	TLS    TLS    `mapstructure:"tls"`
}

// TLS names the PEM files of one side of a mutual-TLS connection.
type TLS struct {
	// CA holds the certificates that sign the other side's.
	CA string `mapstructure:"ca"`
	// Cert and Key are this side's certificate and key. A unit's
	// certificate must carry unit.name as a DNS name: agents verify the
	// unit by it (`tetherd certs` makes such certificates).
	Cert string `mapstructure:"cert"`
	Key  string `mapstructure:"key"`
}

func (h *Hosts) check(p *problems) {
	if h.Listen == "" {
		for key, v := range map[string]string{"hosts.tls.ca": h.TLS.CA, "hosts.tls.cert": h.TLS.Cert, "hosts.tls.key": h.TLS.Key} {
			if v != "" {
				p.Add(key, v, "needs hosts.listen")
			}
		}
		return
	}
	if ap, err := netip.ParseAddrPort(h.Listen); err != nil || ap.Port() == 0 {
		p.Add("hosts.listen", h.Listen, "want address:port, e.g. 10.0.0.1:7320 (0.0.0.0 for every address)")
	}
	for _, f := range []struct{ key, v string }{{"hosts.tls.ca", h.TLS.CA}, {"hosts.tls.cert", h.TLS.Cert}, {"hosts.tls.key", h.TLS.Key}} {
		if f.v == "" {
			p.Add(f.key, f.v, "required with hosts.listen: the streams use mutual TLS only (tetherd certs makes a test CA)")
		}
	}
}
