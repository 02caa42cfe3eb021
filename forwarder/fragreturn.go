package forwarder

import (
	"encoding/binary"
	"fmt"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Fragmented half-NAT replies, and ICMP errors, on a TUN port.
//
// The policy rules of policy.go match a reply by its source port, which
// the kernel's rule lookup reads in no fragment (not even the first,
// which carries it), so a fragmented reply was routed to the client
// untranslated and never arrived whole. An nftables table does for
// fragments what the AF_XDP port's program does (nic/afxdp): a first
// fragment from a half-NAT backend's service port is marked and puts its
// datagram (source, IP ID) in a set, for as long as the pipeline waits
// for a datagram's fragments, and a later fragment of a datagram in the
// set is marked too; one more policy rule sends marked packets to the
// device like the rest. So is an ICMP error a half-NAT backend sends
// the client about its packet (a UDP port unreachable, say), which the
// port rules do not match either, found by the packet it quotes.
//
//	table ip tether-DEVICE {
//	  set endpoints { type ipv4_addr . inet_proto . inet_service; elements = { BACKEND . PROTO . PORT, ... } }
//	  set datagrams { type ipv4_addr . inet_service; flags dynamic, timeout; timeout FRAGMENT_TIMEOUT }
//	  chain prerouting {
//	    type filter hook prerouting priority mangle;
//	    ip frag-off & 0x3fff == 0x2000 ip saddr . meta l4proto . th sport @endpoints update @datagrams { ip saddr . ip id } meta mark set MARK
//	    ip frag-off & 0x1fff != 0 ip saddr . ip id @datagrams meta mark set MARK
//	    ip version-and-length 0x45, not a fragment, icmp type {3, 11, 12}, quoted header 0x45,
//	        quoted daddr . quoted protocol . quoted dport @endpoints meta mark set MARK
//	  }
//	}
//	ip rule add priority 9000 fwmark MARK lookup TABLE
//
// Where the kernel reassembles before routing (conntrack loaded in the
// namespace), the whole datagram meets the port rules and the table
// sees no fragment. A later fragment that overtakes its first one is not
// caught, as on the AF_XDP port. IPv6 fragmented replies and ICMPv6
// errors are not caught yet.

// fragMark is the mark of a fragment of a half-NAT reply, with the
// unit's table in its low 16 bits so that units on one host differ; its
// high bits keep clear of the small marks operators use.
func fragMark(table int) uint32 { return 0x7e000000 | uint32(table)&0xffff }

// fragTableName is the nftables table of the unit whose device is dev.
func fragTableName(dev string) string { return "tether-" + dev }

// syncFragReturn makes the nftables table of device dev catch the later
// fragments of replies from want's IPv4 endpoints, or removes it when
// there are none. The table is made anew each time, in one transaction.
func syncFragReturn(dev string, table int, want []returnRule, timeout time.Duration) error {
	conn, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	t := &nftables.Table{Family: nftables.TableFamilyIPv4, Name: fragTableName(dev)}
	// Added first, so that the deletion finds it whether or not it was
	// there.
	conn.AddTable(t)
	conn.DelTable(t)
	var eps []nftables.SetElement
	for _, r := range want {
		if r.addr.Is4() {
			a := r.addr.As4()
			key := make([]byte, 12) // address, protocol and port, each padded to 4 bytes
			copy(key, a[:])
			key[4] = r.proto
			binary.BigEndian.PutUint16(key[8:], r.port)
			eps = append(eps, nftables.SetElement{Key: key})
		}
	}
	if len(eps) > 0 {
		if err := addFragTable(conn, t, eps, fragMark(table), timeout); err != nil {
			return err
		}
	}
	if err := conn.Flush(); err != nil {
		return fmt.Errorf("nftables table %s: %w", t.Name, err)
	}
	return nil
}

// addFragTable queues the table, its sets and its rules on conn.
func addFragTable(conn *nftables.Conn, t *nftables.Table, eps []nftables.SetElement, mark uint32, timeout time.Duration) error {
	conn.AddTable(t)
	endpoints := &nftables.Set{Table: t, Name: "endpoints", Concatenation: true,
		KeyType: nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetProto, nftables.TypeInetService)}
	if err := conn.AddSet(endpoints, eps); err != nil {
		return fmt.Errorf("nftables set endpoints: %w", err)
	}
	datagrams := &nftables.Set{Table: t, Name: "datagrams", Concatenation: true, Dynamic: true, HasTimeout: true, Timeout: timeout,
		KeyType: nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetService)}
	if err := conn.AddSet(datagrams, nil); err != nil {
		return fmt.Errorf("nftables set datagrams: %w", err)
	}
	prio := nftables.ChainPriorityMangle
	policy := nftables.ChainPolicyAccept
	chain := conn.AddChain(&nftables.Chain{Name: "prerouting", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: prio, Policy: &policy})

	// Registers: 1 is 16 bytes, the same as the 4-byte registers 8 to
	// 11, which a concatenation fills in turn.
	const reg1, reg32at1, reg32at2 = 1, 9, 10
	fragOff := func(mask []byte, op expr.CmpOp, val []byte) []expr.Any {
		return []expr.Any{
			&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: 6, Len: 2},
			&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 2, Mask: mask, Xor: []byte{0, 0}},
			&expr.Cmp{Op: op, Register: reg1, Data: val},
		}
	}
	saddr := &expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4}
	ipID := &expr.Payload{DestRegister: reg32at1, Base: expr.PayloadBaseNetworkHeader, Offset: 4, Len: 2}

	// A first fragment (more fragments, offset 0) from an endpoint: its
	// datagram goes in the set.
	first := fragOff([]byte{0x3f, 0xff}, expr.CmpOpEq, []byte{0x20, 0x00})
	first = append(first,
		saddr,
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg32at1},
		&expr.Payload{DestRegister: reg32at2, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 2},
		&expr.Lookup{SourceRegister: reg1, SetName: endpoints.Name, SetID: endpoints.ID},
		ipID,
		&expr.Dynset{SrcRegKey: reg1, SetName: datagrams.Name, SetID: datagrams.ID, Operation: unix.NFT_DYNSET_OP_UPDATE, Timeout: timeout},
	)
	first = append(first, setMark(reg1, mark)...)
	conn.AddRule(&nftables.Rule{Table: t, Chain: chain, Exprs: first})

	// A later fragment (an offset) of a datagram in the set: marked.
	later := fragOff([]byte{0x1f, 0xff}, expr.CmpOpNeq, []byte{0, 0})
	later = append(later,
		saddr,
		ipID,
		&expr.Lookup{SourceRegister: reg1, SetName: datagrams.Name, SetID: datagrams.ID},
	)
	later = append(later, setMark(reg1, mark)...)
	conn.AddRule(&nftables.Rule{Table: t, Chain: chain, Exprs: later})

	// An ICMP error a backend sends the client about the client's
	// packet to an endpoint (a UDP port unreachable, say): marked, so
	// that the pipeline relays it from the VIP. Both headers without
	// options, so that the quote's fields lie where the rule reads them.
	errTypes := &nftables.Set{Table: t, Name: "icmp_errors", Constant: true, KeyType: nftables.TypeICMPType}
	if err := conn.AddSet(errTypes, []nftables.SetElement{{Key: []byte{3}}, {Key: []byte{11}}, {Key: []byte{12}}}); err != nil {
		return fmt.Errorf("nftables set icmp_errors: %w", err)
	}
	byte0x45 := func(off uint32) []expr.Any {
		return []expr.Any{
			&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{0x45}},
		}
	}
	icmp := byte0x45(0)
	icmp = append(icmp, fragOff([]byte{0x3f, 0xff}, expr.CmpOpEq, []byte{0, 0})...)
	icmp = append(icmp,
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{unix.IPPROTO_ICMP}},
		&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 1},
		&expr.Lookup{SourceRegister: reg1, SetName: errTypes.Name, SetID: errTypes.ID},
	)
	icmp = append(icmp, byte0x45(28)...) // the quoted header: 20 + 8 on
	icmp = append(icmp,
		&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: 28 + 16, Len: 4},         // its destination
		&expr.Payload{DestRegister: reg32at1, Base: expr.PayloadBaseNetworkHeader, Offset: 28 + 9, Len: 1},      // protocol
		&expr.Payload{DestRegister: reg32at2, Base: expr.PayloadBaseNetworkHeader, Offset: 28 + 20 + 2, Len: 2}, // destination port
		&expr.Lookup{SourceRegister: reg1, SetName: endpoints.Name, SetID: endpoints.ID},
	)
	icmp = append(icmp, setMark(reg1, mark)...)
	conn.AddRule(&nftables.Rule{Table: t, Chain: chain, Exprs: icmp})
	return nil
}

// setMark is "meta mark set mark", through register reg.
func setMark(reg uint32, mark uint32) []expr.Any {
	return []expr.Any{
		&expr.Immediate{Register: reg, Data: binaryutil.NativeEndian.PutUint32(mark)},
		&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: reg},
	}
}
