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
// IPv6 has a table of its own (family ip6), which reads the fragment
// header and ICMPv6 errors alike. Where the kernel reassembles before
// routing (conntrack loaded in the namespace), the whole datagram meets
// the port rules and the tables see no fragment. A later fragment that
// overtakes its first one is not caught, as on the AF_XDP port.

// fragMark is the mark of a fragment of a half-NAT reply, with the
// unit's table in its low 16 bits so that units on one host differ; its
// high bits keep clear of the small marks operators use.
func fragMark(table int) uint32 { return 0x7e000000 | uint32(table)&0xffff }

// fragTableName is the nftables table (one per family) of the unit whose
// device is dev.
func fragTableName(dev string) string { return "tether-" + dev }

// family is what the table's rules read of one IP version: where the
// fields lie, and the set types that hold them.
type family struct {
	v6        bool
	nft       nftables.TableFamily
	addrType  nftables.SetDatatype
	idType    nftables.SetDatatype
	addrLen   uint32
	icmpProto byte
	icmpTypes []byte // the errors about a packet
	// loadFrag loads the fragment offset-and-flags word into register
	// 1 (for IPv6 the fragment header's: a packet without one does not
	// match); first and firstVal are the mask and value of a first
	// fragment's word (offset 0, more fragments), later the mask that
	// is not zero in a later one's (an offset).
	loadFrag     func() []expr.Any
	first, later []byte
	firstVal     []byte
	// saddr and id load the source address and the datagram's
	// identification into registers 1 and the one after the address.
	saddr, id func() expr.Any
	// plain checks a packet's headers hold no options or extension
	// headers, so that an ICMP error's quote lies where the rule reads
	// it; quote is where the quoted packet's header starts.
	plain    func() []expr.Any
	quote    uint32
	quoteDst uint32 // offsets in the quoted header
	quoteNxt uint32
	quoteHdr uint32 // its length
}

// ipv4 and ipv6 are the two families' fields.
func ipv4() *family {
	return &family{
		nft: nftables.TableFamilyIPv4, addrType: nftables.TypeIPAddr, idType: nftables.TypeInetService, addrLen: 4,
		icmpProto: unix.IPPROTO_ICMP, icmpTypes: []byte{3, 11, 12},
		loadFrag: func() []expr.Any {
			return []expr.Any{&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 6, Len: 2}}
		},
		first: []byte{0x3f, 0xff}, firstVal: []byte{0x20, 0x00}, later: []byte{0x1f, 0xff},
		saddr: func() expr.Any {
			return &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4}
		},
		id: func() expr.Any {
			return &expr.Payload{DestRegister: 9, Base: expr.PayloadBaseNetworkHeader, Offset: 4, Len: 2}
		},
		plain: func() []expr.Any {
			// Version 4, 20 bytes, not a fragment.
			return []expr.Any{
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 0, Len: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0x45}},
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 6, Len: 2},
				&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 2, Mask: []byte{0x3f, 0xff}, Xor: []byte{0, 0}},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0, 0}},
			}
		},
		quote: 20 + 8, quoteDst: 16, quoteNxt: 9, quoteHdr: 20,
	}
}

func ipv6() *family {
	return &family{
		v6: true, nft: nftables.TableFamilyIPv6, addrType: nftables.TypeIP6Addr, idType: nftables.TypeInteger, addrLen: 16,
		icmpProto: unix.IPPROTO_ICMPV6, icmpTypes: []byte{1, 3, 4},
		loadFrag: func() []expr.Any {
			// The fragment header's offset-and-flags word; a packet
			// without one does not match.
			return []expr.Any{&expr.Exthdr{DestRegister: 1, Type: unix.IPPROTO_FRAGMENT, Offset: 2, Len: 2, Op: expr.ExthdrOpIpv6}}
		},
		first: []byte{0xff, 0xf9}, firstVal: []byte{0x00, 0x01}, later: []byte{0xff, 0xf8},
		saddr: func() expr.Any {
			return &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 8, Len: 16}
		},
		id: func() expr.Any {
			return &expr.Exthdr{DestRegister: 12, Type: unix.IPPROTO_FRAGMENT, Offset: 4, Len: 4, Op: expr.ExthdrOpIpv6}
		},
		plain: func() []expr.Any {
			// ICMPv6 right after the fixed header.
			return []expr.Any{
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 6, Len: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_ICMPV6}},
			}
		},
		quote: 40 + 8, quoteDst: 24, quoteNxt: 6, quoteHdr: 40,
	}
}

// syncFragReturn makes the nftables tables of device dev catch the
// fragments of replies from want's endpoints and the ICMP errors about
// packets to them, or removes them where a family has no endpoint. Each
// table is made anew, in one transaction.
func syncFragReturn(dev string, table int, want []returnRule, timeout time.Duration) error {
	conn, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	for _, f := range []*family{ipv4(), ipv6()} {
		t := &nftables.Table{Family: f.nft, Name: fragTableName(dev)}
		// Added first, so that the deletion finds it whether or not
		// it was there.
		conn.AddTable(t)
		conn.DelTable(t)
		var eps []nftables.SetElement
		for _, r := range want {
			if r.addr.Is4() == f.v6 {
				continue
			}
			// Address, protocol and port, each padded to 4 bytes.
			key := make([]byte, f.addrLen+8)
			copy(key, r.addr.AsSlice())
			key[f.addrLen] = r.proto
			binary.BigEndian.PutUint16(key[f.addrLen+4:], r.port)
			eps = append(eps, nftables.SetElement{Key: key})
		}
		if len(eps) > 0 {
			if err := addFragTable(conn, f, t, eps, fragMark(table), timeout); err != nil {
				return err
			}
		}
	}
	if err := conn.Flush(); err != nil {
		return fmt.Errorf("nftables tables %s: %w", fragTableName(dev), err)
	}
	return nil
}

// addFragTable queues table t of family f, its sets and its rules on
// conn.
func addFragTable(conn *nftables.Conn, f *family, t *nftables.Table, eps []nftables.SetElement, mark uint32, timeout time.Duration) error {
	conn.AddTable(t)
	endpoints := &nftables.Set{Table: t, Name: "endpoints", Concatenation: true,
		KeyType: nftables.MustConcatSetType(f.addrType, nftables.TypeInetProto, nftables.TypeInetService)}
	if err := conn.AddSet(endpoints, eps); err != nil {
		return fmt.Errorf("nftables set endpoints: %w", err)
	}
	datagrams := &nftables.Set{Table: t, Name: "datagrams", Concatenation: true, Dynamic: true, HasTimeout: true, Timeout: timeout,
		KeyType: nftables.MustConcatSetType(f.addrType, f.idType)}
	if err := conn.AddSet(datagrams, nil); err != nil {
		return fmt.Errorf("nftables set datagrams: %w", err)
	}
	var errs []nftables.SetElement
	for _, typ := range f.icmpTypes {
		errs = append(errs, nftables.SetElement{Key: []byte{typ}})
	}
	errTypes := &nftables.Set{Table: t, Name: "icmp_errors", Constant: true, KeyType: nftables.TypeICMPType}
	if f.v6 {
		errTypes.KeyType = nftables.TypeICMP6Type
	}
	if err := conn.AddSet(errTypes, errs); err != nil {
		return fmt.Errorf("nftables set icmp_errors: %w", err)
	}
	prio := nftables.ChainPriorityMangle
	policy := nftables.ChainPolicyAccept
	chain := conn.AddChain(&nftables.Chain{Name: "prerouting", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: prio, Policy: &policy})

	// Registers: 1 is 16 bytes, the same as the 4-byte registers 8 to
	// 11, which a concatenation fills in turn after the address.
	after := func(n uint32) uint32 { return 8 + f.addrLen/4 + n }
	fragWord := func(mask []byte, op expr.CmpOp, val []byte) []expr.Any {
		return append(f.loadFrag(),
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 2, Mask: mask, Xor: []byte{0, 0}},
			&expr.Cmp{Op: op, Register: 1, Data: val},
		)
	}

	// A first fragment from an endpoint: marked, and its datagram goes
	// in the set.
	first := fragWord(f.first, expr.CmpOpEq, f.firstVal)
	first = append(first,
		f.saddr(),
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: after(0)},
		&expr.Payload{DestRegister: after(1), Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 2},
		&expr.Lookup{SourceRegister: 1, SetName: endpoints.Name, SetID: endpoints.ID},
		f.id(),
		&expr.Dynset{SrcRegKey: 1, SetName: datagrams.Name, SetID: datagrams.ID, Operation: unix.NFT_DYNSET_OP_UPDATE, Timeout: timeout},
	)
	conn.AddRule(&nftables.Rule{Table: t, Chain: chain, Exprs: append(first, setMark(mark)...)})

	// A later fragment of a datagram in the set: marked.
	later := fragWord(f.later, expr.CmpOpNeq, []byte{0, 0})
	later = append(later, f.saddr(), f.id(), &expr.Lookup{SourceRegister: 1, SetName: datagrams.Name, SetID: datagrams.ID})
	conn.AddRule(&nftables.Rule{Table: t, Chain: chain, Exprs: append(later, setMark(mark)...)})

	// An ICMP error a backend sends the client about the client's
	// packet to an endpoint (a UDP port unreachable, say): marked, so
	// that the pipeline relays it from the VIP. Neither the error's
	// header nor the quoted one may carry options or extension headers,
	// so that the quote's fields lie where the rule reads them.
	q := f.quote
	icmp := f.plain()
	icmp = append(icmp,
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{f.icmpProto}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 1},
		&expr.Lookup{SourceRegister: 1, SetName: errTypes.Name, SetID: errTypes.ID},
	)
	if !f.v6 {
		icmp = append(icmp, // the quoted header: version 4, 20 bytes
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: q, Len: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0x45}},
		)
	}
	icmp = append(icmp,
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: q + f.quoteDst, Len: f.addrLen},
		&expr.Payload{DestRegister: after(0), Base: expr.PayloadBaseNetworkHeader, Offset: q + f.quoteNxt, Len: 1},
		&expr.Payload{DestRegister: after(1), Base: expr.PayloadBaseNetworkHeader, Offset: q + f.quoteHdr + 2, Len: 2},
		&expr.Lookup{SourceRegister: 1, SetName: endpoints.Name, SetID: endpoints.ID},
	)
	conn.AddRule(&nftables.Rule{Table: t, Chain: chain, Exprs: append(icmp, setMark(mark)...)})
	return nil
}

// setMark is "meta mark set mark", through register 1.
func setMark(mark uint32) []expr.Any {
	return []expr.Any{
		&expr.Immediate{Register: 1, Data: binaryutil.NativeEndian.PutUint32(mark)},
		&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: 1},
	}
}
