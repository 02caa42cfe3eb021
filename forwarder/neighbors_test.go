package forwarder

import (
	"net/netip"
	"testing"
)

// TestResolveEitherFamily: asking the kernel to resolve a next hop works
// for both families (an IPv6 backend's address once panicked in As4
// before the family was looked at) and for an IPv4-mapped address.
func TestResolveEitherFamily(t *testing.T) {
	for _, a := range []string{"127.0.0.1", "::1", "::ffff:127.0.0.1", "fd00::10"} {
		resolve(netip.MustParseAddr(a))
	}
}
