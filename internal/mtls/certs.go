package mtls

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// File names in a certificate directory.
const (
	CAFile  = "ca.crt"
	CAKey   = "ca.key"
	certExt = ".crt"
	keyExt  = ".key"
)

// UnitFiles and HostFiles are where Issue writes a unit's and a host's
// certificate and key in dir, and with the CA, what their
// configurations name.
func UnitFiles(dir, unit string) Files {
	base := filepath.Join(dir, "unit-"+unit)
	return Files{CA: filepath.Join(dir, CAFile), Cert: base + certExt, Key: base + keyExt}
}

// HostFiles: see UnitFiles.
func HostFiles(dir string, host uint32) Files {
	base := filepath.Join(dir, "host-"+strconv.FormatUint(uint64(host), 10))
	return Files{CA: filepath.Join(dir, CAFile), Cert: base + certExt, Key: base + keyExt}
}

// validity is long enough for a lab and short enough that nobody
// mistakes a test CA for a production one.
const validity = 397 * 24 * time.Hour

// CA is a certificate authority that issues the stream's certificates.
type CA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// OpenCA reads dir's CA, or makes one (ECDSA P-256) and writes it there
// when dir has none. name goes into a new CA's subject.
func OpenCA(dir, name string) (*CA, bool, error) {
	certPEM, err := os.ReadFile(filepath.Join(dir, CAFile))
	if errors.Is(err, fs.ErrNotExist) {
		ca, err := newCA(name)
		if err != nil {
			return nil, false, err
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, false, fmt.Errorf("certs: %w", err)
		}
		if err := writePair(filepath.Join(dir, CAFile), filepath.Join(dir, CAKey), ca.cert.Raw, ca.key); err != nil {
			return nil, false, err
		}
		return ca, true, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("certs: %w", err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, CAKey))
	if err != nil {
		return nil, false, fmt.Errorf("certs: the CA's key: %w", err)
	}
	cb, _ := pem.Decode(certPEM)
	kb, _ := pem.Decode(keyPEM)
	if cb == nil || kb == nil {
		return nil, false, fmt.Errorf("certs: %s or %s: not PEM", CAFile, CAKey)
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, false, fmt.Errorf("certs: %s: %w", CAFile, err)
	}
	key, err := x509.ParseECPrivateKey(kb.Bytes)
	if err != nil {
		return nil, false, fmt.Errorf("certs: %s: %w", CAKey, err)
	}
	return &CA{cert: cert, key: key}, false, nil
}

func newCA(name string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("certs: %w", err)
	}
	tmpl := template(pkix.Name{CommonName: name})
	tmpl.IsCA = true
	tmpl.BasicConstraintsValid = true
	tmpl.MaxPathLenZero = true
	tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("certs: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("certs: %w", err)
	}
	return &CA{cert: cert, key: key}, nil
}

func template(subject pkix.Name) *x509.Certificate {
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	now := time.Now()
	return &x509.Certificate{SerialNumber: serial, Subject: subject,
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(validity)}
}

// IssueUnit writes unit's certificate and key into dir (UnitFiles).
// Agents and other units verify a unit by its name, a DNS name in the
// certificate; addrs add IP SANs for clients that dial by address. The
// certificate serves both ends of a TLS connection: a unit answers
// agents and units, and dials other units (the atom stream).
func (ca *CA) IssueUnit(dir, unit string, addrs []netip.Addr) (Files, error) {
	// The name becomes part of a file name.
	if unit == "" || unit == "." || unit == ".." || strings.ContainsAny(unit, "/\\ ") {
		return Files{}, fmt.Errorf("certs: unit name %q", unit)
	}
	tmpl := template(pkix.Name{CommonName: unit})
	tmpl.DNSNames = []string{unit}
	for _, a := range addrs {
		tmpl.IPAddresses = append(tmpl.IPAddresses, a.AsSlice())
	}
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	f := UnitFiles(dir, unit)
	return f, ca.issue(tmpl, f)
}

// IssueHost writes host's client certificate and key into dir
// (HostFiles); the certificate names the host by HostURI, and its
// tunnel addresses (see TunnelAddrs) as IP SANs.
func (ca *CA) IssueHost(dir string, host uint32, tunnel ...netip.Addr) (Files, error) {
	if host == 0 {
		return Files{}, errors.New("certs: host 0")
	}
	tmpl := template(pkix.Name{CommonName: "host " + strconv.FormatUint(uint64(host), 10)})
	tmpl.URIs = append(tmpl.URIs, HostURI(host))
	for _, a := range tunnel {
		tmpl.IPAddresses = append(tmpl.IPAddresses, a.AsSlice())
	}
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	f := HostFiles(dir, host)
	return f, ca.issue(tmpl, f)
}

func (ca *CA) issue(tmpl *x509.Certificate, f Files) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("certs: %w", err)
	}
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return fmt.Errorf("certs: %w", err)
	}
	return writePair(f.Cert, f.Key, der, key)
}

// writePair writes a certificate (0644) and its key (0600, written
// whole before it gets its name, so no reader sees half a key).
func writePair(certPath, keyPath string, der []byte, key *ecdsa.PrivateKey) error {
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return fmt.Errorf("certs: %w", err)
	}
	if err := writeFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		return err
	}
	return writeFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}

func writeFile(path string, b []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, mode); err != nil {
		return fmt.Errorf("certs: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("certs: %w", err)
	}
	return nil
}
