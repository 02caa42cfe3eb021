package mtls

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"testing"
)

func TestHostID(t *testing.T) {
	u := func(s string) *url.URL { v, _ := url.Parse(s); return v }
	cases := []struct {
		uris []*url.URL
		want uint32
		ok   bool
	}{
		{[]*url.URL{HostURI(7)}, 7, true},
		{[]*url.URL{u("spiffe://x/y"), HostURI(4294967295)}, 4294967295, true},
		{nil, 0, false},
		{[]*url.URL{HostURI(7), HostURI(8)}, 0, false},
		{[]*url.URL{u("tether://host/0")}, 0, false},
		{[]*url.URL{u("tether://host/4294967296")}, 0, false},
		{[]*url.URL{u("tether://host/x7")}, 0, false},
		{[]*url.URL{u("tether://host")}, 0, false},
	}
	for _, c := range cases {
		got, err := HostID(&x509.Certificate{URIs: c.uris})
		if c.ok && (err != nil || got != c.want) {
			t.Errorf("%v: got %d, %v; want %d", c.uris, got, err, c.want)
		}
		if !c.ok && !errors.Is(err, ErrIdentity) {
			t.Errorf("%v: got %d, %v; want ErrIdentity", c.uris, got, err)
		}
	}
}

// TestHandshake: certificates the helper makes carry the identities
// the configurations check, and a handshake with them works (TLS 1.3);
// a client of another CA, and a unit of another name, are refused.
func TestHandshake(t *testing.T) {
	dir, other := t.TempDir(), t.TempDir()
	ca, made, err := OpenCA(dir, "test")
	if err != nil || !made {
		t.Fatalf("OpenCA: %v, made %v", err, made)
	}
	if again, made, err := OpenCA(dir, "test"); err != nil || made || !again.cert.Equal(ca.cert) {
		t.Fatalf("OpenCA again: %v, made %v", err, made)
	}
	uf, err := ca.IssueUnit(dir, "unit-a", []netip.Addr{netip.MustParseAddr("127.0.0.1")})
	if err != nil {
		t.Fatal(err)
	}
	hf, err := ca.IssueHost(dir, 7)
	if err != nil {
		t.Fatal(err)
	}
	oca, _, _ := OpenCA(other, "other")
	of, err := oca.IssueHost(other, 7)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Server(uf, "unit-b"); err == nil || !strings.Contains(err.Error(), "unit-b") {
		t.Errorf("a unit certificate for another name: %v", err)
	}
	if _, err := Client(hf, 8); err == nil || !strings.Contains(err.Error(), "names host 7") {
		t.Errorf("a host certificate for another host: %v", err)
	}
	srv, err := Server(uf, "unit-a")
	if err != nil {
		t.Fatal(err)
	}
	good, err := Client(hf, 7)
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := Client(Files{CA: hf.CA, Cert: of.Cert, Key: of.Key}, 7)
	if err != nil {
		t.Fatal(err)
	}
	handshake := func(client *tls.Config, name string) (uint32, error) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		errc := make(chan error, 1)
		var sc *tls.Conn
		go func() {
			a, err := l.Accept()
			if err != nil {
				errc <- err
				return
			}
			defer a.Close()
			sc = tls.Server(a, srv)
			errc <- sc.Handshake()
		}()
		b, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		c := client.Clone()
		c.ServerName = name
		cc := tls.Client(b, c)
		cerr := cc.Handshake()
		serr := <-errc
		if serr != nil {
			return 0, serr
		}
		if cerr != nil {
			return 0, cerr
		}
		if v := cc.ConnectionState().Version; v != tls.VersionTLS13 {
			t.Errorf("version %x, want TLS 1.3", v)
		}
		return HostID(sc.ConnectionState().PeerCertificates[0])
	}
	if id, err := handshake(good, "unit-a"); err != nil || id != 7 {
		t.Errorf("good handshake: host %d, %v", id, err)
	}
	if _, err := handshake(foreign, "unit-a"); err == nil {
		t.Error("a host certificate of another CA was accepted")
	}
	if _, err := handshake(good, "unit-b"); err == nil {
		t.Error("the unit was accepted under another name")
	}
}

// A host certificate names the host's tunnel addresses as IP SANs.
func TestTunnelAddrs(t *testing.T) {
	dir := t.TempDir()
	ca, _, err := OpenCA(dir, "test")
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Addr{netip.MustParseAddr("10.1.0.11"), netip.MustParseAddr("fd00::11")}
	f, err := ca.IssueHost(dir, 9, want...)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if got := TunnelAddrs(cert); !slices.Equal(got, want) {
		t.Errorf("tunnel addresses %v, want %v", got, want)
	}
	if id, err := HostID(cert); err != nil || id != 9 {
		t.Errorf("host ID %d, %v", id, err)
	}
}

// TestUnits: two units' certificates complete a handshake both ways and
// each side learns the other's unit name; a host's certificate names no
// unit, and a unit's configuration refuses a certificate of another
// name.
func TestUnits(t *testing.T) {
	dir := t.TempDir()
	ca, _, err := OpenCA(dir, "test")
	if err != nil {
		t.Fatal(err)
	}
	af, err := ca.IssueUnit(dir, "unit-a", nil)
	if err != nil {
		t.Fatal(err)
	}
	bf, err := ca.IssueUnit(dir, "unit-b", nil)
	if err != nil {
		t.Fatal(err)
	}
	hf, err := ca.IssueHost(dir, 3)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := Units(af, "unit-b"); err == nil || !strings.Contains(err.Error(), `names unit "unit-a"`) {
		t.Errorf("unit-a's certificate as unit-b: %v", err)
	}
	if _, _, err := Units(hf, "unit-a"); !errors.Is(err, ErrUnitIdentity) {
		t.Errorf("a host's certificate as a unit: %v", err)
	}
	srv, _, err := Units(af, "unit-a")
	if err != nil {
		t.Fatal(err)
	}
	_, cli, err := Units(bf, "unit-b")
	if err != nil {
		t.Fatal(err)
	}
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	sc := tls.Server(a, srv)
	errc := make(chan error, 1)
	go func() { errc <- sc.Handshake() }()
	c := cli.Clone()
	c.ServerName = "unit-a"
	cc := tls.Client(b, c)
	if err := cc.Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if n, err := UnitName(sc.ConnectionState().PeerCertificates[0]); err != nil || n != "unit-b" {
		t.Errorf("the server sees %q, %v; want unit-b", n, err)
	}
	if n, err := UnitName(cc.ConnectionState().PeerCertificates[0]); err != nil || n != "unit-a" {
		t.Errorf("the client sees %q, %v; want unit-a", n, err)
	}
}
