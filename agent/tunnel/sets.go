package tunnel

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/tetherlb/tether/tables/encap"
)

// This file holds what the agent needs beyond single mappings: one
// unit's whole set made exact (a unit's full resync), the sets of units
// that no longer exist forgotten, and the program removed for good by an
// operator when no agent runs.

// value is the flows4 or flows6 value of t (Put's layout).
func value(t *encap.Tuple) []byte {
	n := 4
	if t.V6 {
		n = 16
	}
	v := make([]byte, 2*n+8)
	copy(v[0:n], t.Src[:n])
	copy(v[n:2*n], t.Dst[:n])
	binary.BigEndian.PutUint16(v[2*n:], t.SrcPort)
	binary.BigEndian.PutUint16(v[2*n+2:], t.DstPort)
	v[2*n+4] = t.Proto
	return v
}

// tupleOf is the inverse of value.
func tupleOf(v []byte) encap.Tuple {
	n := (len(v) - 8) / 2
	t := encap.Tuple{SrcPort: binary.BigEndian.Uint16(v[2*n:]), DstPort: binary.BigEndian.Uint16(v[2*n+2:]),
		Proto: v[2*n+4], V6: n == 16}
	copy(t.Src[:n], v[0:n])
	copy(t.Dst[:n], v[n:2*n])
	return t
}

// walk calls fn with every mapping the kernel holds, IPv4 and IPv6. It
// reads the maps with one system call per entry: for a resync and for
// operators, not for every batch.
func (h *Host) walk(fn func(unit netip.Addr, id uint32, t encap.Tuple)) error {
	for _, m := range []*ebpf.Map{h.m.flows4, h.m.flows6} {
		var k, v []byte
		it := m.Iterate()
		for it.Next(&k, &v) {
			n := len(k) - 4
			fn(addrOf(k[:n]), binary.BigEndian.Uint32(k[n:]), tupleOf(v))
		}
		if err := it.Err(); err != nil {
			return fmt.Errorf("tunnel: list mappings: %w", err)
		}
	}
	return nil
}

// List returns up to limit of the mappings the kernel holds, from every
// unit, and how many it holds in all: for operators.
func (h *Host) List(limit int) ([]Listed, int, error) {
	var out []Listed
	n := 0
	err := h.walk(func(u netip.Addr, id uint32, t encap.Tuple) {
		if n++; len(out) < limit {
			out = append(out, Listed{Unit: u, ID: id, Tuple: t})
		}
	})
	return out, n, err
}

// Listed is one mapping as List returns it.
type Listed struct {
	Unit  netip.Addr
	ID    uint32
	Tuple encap.Tuple
}

// Mappings returns every mapping the kernel holds from unit (flow ID →
// tuple). It walks the whole map: for tests and operators.
func (h *Host) Mappings(unit netip.Addr) (map[uint32]encap.Tuple, error) {
	out := map[uint32]encap.Tuple{}
	err := h.walk(func(u netip.Addr, id uint32, t encap.Tuple) {
		if u == unit {
			out[id] = t
		}
	})
	return out, err
}

// ReplaceUnit makes the mappings from unit exactly want: it deletes the
// unit's mappings want lacks first (which frees room in a full map),
// then writes those that are new or changed, leaving alone the ones the
// kernel already holds as they are. A unit's full resync after an agent
// restart therefore costs one walk of the map and the writes of what
// changed meanwhile, and packets of unchanged flows never miss. Every
// tuple in want must be TCP or UDP of the unit address's family (as
// Put). Other units' mappings are not touched.
func (h *Host) ReplaceUnit(unit netip.Addr, want map[uint32]*encap.Tuple) (added, removed int, err error) {
	if !unit.IsValid() {
		return 0, 0, fmt.Errorf("tunnel: unit %v: not an address", unit)
	}
	same := map[uint32]bool{}
	var stale []uint32
	err = h.walk(func(u netip.Addr, id uint32, have encap.Tuple) {
		if u != unit {
			return
		}
		t, ok := want[id]
		switch {
		case !ok:
			stale = append(stale, id)
		case *t == have:
			same[id] = true
		}
	})
	if err != nil {
		return 0, 0, err
	}
	for _, id := range stale {
		if err := h.Delete(unit, id); err != nil {
			return added, removed, err
		}
		removed++
	}
	for id, t := range want {
		if same[id] {
			continue
		}
		if err := h.Put(unit, id, t); err != nil {
			return added, removed, err
		}
		added++
	}
	return added, removed, nil
}

// ForgetUnitsBut deletes every mapping from a unit address not in keep:
// the sets of units that left the configuration, or whose address
// changed, which no packet can reach any more (the program drops packets
// from addresses that are not units) but which take room in the map.
func (h *Host) ForgetUnitsBut(keep []netip.Addr) (int, error) {
	type key struct {
		unit netip.Addr
		id   uint32
	}
	var gone []key
	err := h.walk(func(u netip.Addr, id uint32, _ encap.Tuple) {
		for _, k := range keep {
			if k == u {
				return
			}
		}
		gone = append(gone, key{u, id})
	})
	if err != nil {
		return 0, err
	}
	for i, k := range gone {
		if err := h.Delete(k.unit, k.id); err != nil {
			return i, err
		}
	}
	return len(gone), nil
}

// Units returns the addresses tunnel packets may come from now.
func (h *Host) Units() ([]netip.Addr, error) {
	var out []netip.Addr
	for _, m := range []*ebpf.Map{h.m.units4, h.m.units6} {
		var k []byte
		var v uint8
		it := m.Iterate()
		for it.Next(&k, &v) {
			out = append(out, addrOf(k))
		}
		if err := it.Err(); err != nil {
			return nil, fmt.Errorf("tunnel: list units: %w", err)
		}
	}
	return out, nil
}

// MaxFlows is the bound of each family's mappings' map. A program taken
// over keeps the bound it was made with: a new one takes effect after
// RemovePinned.
func (h *Host) MaxFlows() int { return int(h.m.flows4.MaxEntries()) }

// RemovePinned detaches and unpins the program an agent left on
// interface ifname under pinDir (default /sys/fs/bpf/tether-host), with
// its mappings: for an operator who retires a host, or who wants a new
// MaxFlows, while no agent runs. Tunnel packets then reach the host's
// stack unrestored (and find no socket); the tunnel addresses stay on
// the interface. It reports whether there was anything to remove. The
// interface need not exist any more: its pins are found by name.
func RemovePinned(ifname, pinDir string) (bool, error) {
	if pinDir == "" {
		pinDir = bpffs + "/tether-host"
	}
	// The pins are v<version>-<index>-<name> (Open): matched by hand, as
	// a name may hold a glob's special characters.
	entries, err := os.ReadDir(pinDir)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("tunnel: %w", err)
	}
	var dirs []string
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), fmt.Sprintf("v%d-", version))
		index, name, _ := strings.Cut(rest, "-")
		if _, err := strconv.Atoi(index); ok && err == nil && name == ifname && e.IsDir() {
			dirs = append(dirs, filepath.Join(pinDir, e.Name()))
		}
	}
	var errs []error
	for _, dir := range dirs {
		// The link holds the program on the interface; once its pin
		// and this last descriptor are gone, the kernel detaches it.
		if l, err := link.LoadPinnedLink(filepath.Join(dir, "link"), nil); err == nil {
			if err := l.Unpin(); err != nil {
				errs = append(errs, fmt.Errorf("tunnel: unpin %s: %w", dir, err))
			}
			l.Close()
		} else if !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("tunnel: %s: %w", dir, err))
		}
		if err := os.RemoveAll(dir); err != nil {
			errs = append(errs, fmt.Errorf("tunnel: %w", err))
		}
	}
	return len(dirs) > 0, errors.Join(errs...)
}
