package mtls

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strconv"
)

// Files names the PEM files of one side of the stream.
type Files struct {
	// CA holds the certificates that sign the other side's.
	CA string
	// Cert and Key are this side's certificate (chain) and key.
	Cert string
	Key  string
}

// ErrIdentity is a certificate that names no host, or several.
var ErrIdentity = errors.New("mtls: certificate names no single host")

// hostScheme and hostAuthority make a host's URI SAN: tether://host/7.
const (
	hostScheme    = "tether"
	hostAuthority = "host"
)

// HostURI is the URI SAN that names host id.
func HostURI(id uint32) *url.URL {
	return &url.URL{Scheme: hostScheme, Host: hostAuthority, Path: "/" + strconv.FormatUint(uint64(id), 10)}
}

// HostID is the host a certificate names: its one tether://host/ID URI
// SAN. A certificate with none, several, or an ID outside 1 to 2^32-1
// names no host.
func HostID(cert *x509.Certificate) (uint32, error) {
	var id uint32
	n := 0
	for _, u := range cert.URIs {
		if u.Scheme != hostScheme || u.Host != hostAuthority {
			continue
		}
		n++
		v, err := strconv.ParseUint(u.Path[min(1, len(u.Path)):], 10, 32)
		if err != nil || v == 0 || u.Path[:min(1, len(u.Path))] != "/" {
			return 0, fmt.Errorf("%w: %q", ErrIdentity, u.String())
		}
		id = uint32(v)
	}
	if n != 1 {
		return 0, fmt.Errorf("%w: %d host URIs", ErrIdentity, n)
	}
	return id, nil
}

// TunnelAddrs returns the tunnel addresses a host's certificate names:
// its IP SANs. A unit sends a host the mappings of tunnel flows to these
// addresses only, so that a host cannot learn (or take) another host's
// flows by claiming its address.
func TunnelAddrs(cert *x509.Certificate) []netip.Addr {
	var out []netip.Addr
	for _, ip := range cert.IPAddresses {
		if a, ok := netip.AddrFromSlice(ip); ok {
			out = append(out, a.Unmap())
		}
	}
	return out
}

// load reads the files: the CA pool and this side's key pair.
func (f Files) load() (*x509.CertPool, tls.Certificate, error) {
	pem, err := os.ReadFile(f.CA)
	if err != nil {
		return nil, tls.Certificate{}, fmt.Errorf("ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, tls.Certificate{}, fmt.Errorf("ca: %q: no PEM certificate", f.CA)
	}
	pair, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		return nil, tls.Certificate{}, fmt.Errorf("cert, key: %q, %q: %w", f.Cert, f.Key, err)
	}
	return pool, pair, nil
}

// Server is a unit's configuration: TLS 1.3 only, and every client must
// present a certificate the CA signed for client authentication. The
// unit's certificate must name unit as a DNS name, since agents verify
// the unit by it.
func Server(f Files, unit string) (*tls.Config, error) {
	pool, pair, err := f.load()
	if err != nil {
		return nil, err
	}
	if !slices.Contains(pair.Leaf.DNSNames, unit) {
		return nil, fmt.Errorf("cert: %q: names %q, not the unit %q (agents verify the unit by its name)", f.Cert, pair.Leaf.DNSNames, unit)
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		MaxVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{pair},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool,
	}, nil
}

// Client is an agent's configuration: TLS 1.3 only, the unit verified
// against the CA (ServerName is set per unit by the caller). The agent's
// certificate must name host, so that a misconfigured agent fails at
// start rather than be refused by every unit.
func Client(f Files, host uint32) (*tls.Config, error) {
	pool, pair, err := f.load()
	if err != nil {
		return nil, err
	}
	id, err := HostID(pair.Leaf)
	if err != nil {
		return nil, fmt.Errorf("cert: %q: %w", f.Cert, err)
	}
	if id != host {
		return nil, fmt.Errorf("cert: %q: names host %d, this host is %d", f.Cert, id, host)
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		MaxVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{pair},
		RootCAs:      pool,
	}, nil
}

// ErrUnitIdentity is a certificate that names no unit: a unit's
// certificate has exactly one DNS name, its unit name, and no host URI.
var ErrUnitIdentity = errors.New("mtls: certificate names no single unit")

// UnitName is the unit a certificate names: its one DNS name, when it
// names no host (a host's certificate is never a unit's).
func UnitName(cert *x509.Certificate) (string, error) {
	if _, err := HostID(cert); err == nil {
		return "", fmt.Errorf("%w: it names a host", ErrUnitIdentity)
	}
	if len(cert.DNSNames) != 1 || cert.DNSNames[0] == "" {
		return "", fmt.Errorf("%w: %d DNS names", ErrUnitIdentity, len(cert.DNSNames))
	}
	return cert.DNSNames[0], nil
}

// Units is a unit's configuration toward other units (the atom
// stream): the server side requires a client certificate the CA signed,
// the client side verifies the server against the CA (ServerName is set
// per unit by the caller: the unit's name). Both present the unit's own
// certificate, which must name unit and no other.
func Units(f Files, unit string) (server, client *tls.Config, err error) {
	pool, pair, err := f.load()
	if err != nil {
		return nil, nil, err
	}
	name, err := UnitName(pair.Leaf)
	if err != nil {
		return nil, nil, fmt.Errorf("cert: %q: %w", f.Cert, err)
	}
	if name != unit {
		return nil, nil, fmt.Errorf("cert: %q: names unit %q, this unit is %q", f.Cert, name, unit)
	}
	if !slices.Contains(pair.Leaf.ExtKeyUsage, x509.ExtKeyUsageClientAuth) {
		return nil, nil, fmt.Errorf("cert: %q: not valid for client authentication (units dial each other): issue it again with tetherd certs", f.Cert)
	}
	server = &tls.Config{
		MinVersion:   tls.VersionTLS13,
		MaxVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{pair},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool,
	}
	client = &tls.Config{
		MinVersion:   tls.VersionTLS13,
		MaxVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{pair},
		RootCAs:      pool,
	}
	return server, client, nil
}
