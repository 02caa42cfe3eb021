package cluster

import (
	"encoding/base64"
	"fmt"
	"os"
	"strings"
)

// KeySize is the length of the cluster key: AES-256.
const KeySize = 32

// ReadKey reads the cluster key from path: exactly KeySize raw bytes
// (head -c 32 /dev/urandom > FILE), in a file no one but its owner may
// read or write. Raw bytes rather than text: nothing to trim, and a
// file of the wrong length is always a mistake.
func ReadKey(path string) ([]byte, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("read cluster key: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("cluster key %s: mode %#o lets others read or change it: chmod 0600 %s", path, st.Mode().Perm(), path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read cluster key: %w", err)
	}
	if len(b) != KeySize {
		hint := "make one with: head -c 32 /dev/urandom > " + path
		if d, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b))); err == nil && len(d) == KeySize {
			hint = "it looks like base64 text: the file must hold the 32 raw bytes (base64 -d)"
		}
		return nil, fmt.Errorf("cluster key %s: %d bytes, want exactly %d raw bytes (AES-256); %s", path, len(b), KeySize, hint)
	}
	return b, nil
}
