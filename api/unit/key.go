package unit

import (
	"fmt"
	"strings"
)

// BackendKey names a backend across processes and restarts: its VIP's
// name and its own, both from the configuration. Its text form is
// "vip/backend", which is how operators name a backend to tetherctl.
// (IDs are the forwarder's and change when it restarts; see
// ReloadReply.)
type BackendKey struct {
	VIP     string `json:"vip"`
	Backend string `json:"backend"`
}

// String returns "vip/backend".
func (k BackendKey) String() string { return k.VIP + "/" + k.Backend }

// ParseBackendKey reads "vip/backend". Names never hold a slash (the
// configuration refuses one), so the first slash splits them.
func ParseBackendKey(s string) (BackendKey, error) {
	vip, be, ok := strings.Cut(s, "/")
	if !ok || vip == "" || be == "" || strings.Contains(be, "/") {
		return BackendKey{}, fmt.Errorf("backend %q: want VIP/BACKEND", s)
	}
	return BackendKey{VIP: vip, Backend: be}, nil
}

// MarshalText writes "vip/backend", so a key can key a JSON object.
func (k BackendKey) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// UnmarshalText reads "vip/backend".
func (k *BackendKey) UnmarshalText(b []byte) error {
	v, err := ParseBackendKey(string(b))
	if err != nil {
		return err
	}
	*k = v
	return nil
}
