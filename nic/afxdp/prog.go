package afxdp

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

// The redirect program. In C it would read:
//
//	eth = data; if (eth + 14 > end) pass;
//	l3 = 14, or 18 behind one 802.1Q tag;
//	IPv4 (IHL 5 for the source check):
//	    if (dst4[ip->daddr]) redirect;
//	    if (proto is TCP/UDP && src4[{saddr, sport, proto}]) redirect;
//	IPv6 (TCP/UDP right after the fixed header for the source check):
//	    if (dst6[ip6->daddr]) redirect;
//	    if (src6[{saddr, sport, nexthdr}]) redirect;
//	pass;
//	redirect: return bpf_redirect_map(xsks, ctx->rx_queue_index, XDP_DROP);
//
// Only Tether's traffic is redirected; the unit's own always passes. When
// no socket serves the queue (the forwarder died and its successor has
// not bound yet) Tether's traffic is dropped, not passed: the kernel would
// forward half-NAT backends' replies untranslated and send the backends
// ICMP redirects that make them route around the unit for minutes, where
// a drop costs the connections a retransmission.

const (
	xdpDrop = 1
	xdpPass = 2

	// xdp_md offsets.
	mdData     = 0
	mdDataEnd  = 4
	mdRxQueue  = 16
	ethHdrLen  = 14
	vlanHdrLen = 4

	// EtherTypes as a little-endian load of their two network-order bytes.
	etIPv4 = 0x0008
	etIPv6 = 0xdd86
	etVLAN = 0x0081
)

// maps are the program's maps. Keys are written by the port in network
// byte order, exactly as they appear in packets.
type maps struct {
	xsks *ebpf.Map // queue index → socket
	dst4 *ebpf.Map // IPv4 address → 1
	dst6 *ebpf.Map // IPv6 address → 1
	src4 *ebpf.Map // {IPv4 address, port, protocol, 0} → 1
	src6 *ebpf.Map // {IPv6 address, port, protocol, 0} → 1
}

const (
	src4KeySize = 8
	src6KeySize = 20
)

func newMaps(queues int) (*maps, error) {
	var m maps
	var err error
	mk := func(spec *ebpf.MapSpec) *ebpf.Map {
		if err != nil {
			return nil
		}
		var mp *ebpf.Map
		mp, err = ebpf.NewMap(spec)
		if err != nil {
			err = fmt.Errorf("create map %s: %w", spec.Name, err)
		}
		return mp
	}
	m.xsks = mk(&ebpf.MapSpec{Name: "tether_xsks", Type: ebpf.XSKMap, KeySize: 4, ValueSize: 4, MaxEntries: uint32(max(queues, 1))})
	m.dst4 = mk(&ebpf.MapSpec{Name: "tether_dst4", Type: ebpf.Hash, KeySize: 4, ValueSize: 1, MaxEntries: 65536})
	m.dst6 = mk(&ebpf.MapSpec{Name: "tether_dst6", Type: ebpf.Hash, KeySize: 16, ValueSize: 1, MaxEntries: 65536})
	m.src4 = mk(&ebpf.MapSpec{Name: "tether_src4", Type: ebpf.Hash, KeySize: src4KeySize, ValueSize: 1, MaxEntries: 65536})
	m.src6 = mk(&ebpf.MapSpec{Name: "tether_src6", Type: ebpf.Hash, KeySize: src6KeySize, ValueSize: 1, MaxEntries: 65536})
	if err != nil {
		m.close()
		return nil, err
	}
	return &m, nil
}

func (m *maps) close() {
	for _, mp := range []*ebpf.Map{m.xsks, m.dst4, m.dst6, m.src4, m.src6} {
		if mp != nil {
			mp.Close()
		}
	}
}

// reloadData reloads the packet pointers after a helper call (which
// clobbers R1-R5) into R2 (data) and R3 (data_end).
func reloadData() asm.Instructions {
	return asm.Instructions{
		asm.LoadMem(asm.R2, asm.R6, mdData, asm.Word),
		asm.LoadMem(asm.R3, asm.R6, mdDataEnd, asm.Word),
	}
}

// need jumps to pass unless the packet holds n bytes from data.
func need(n int32) asm.Instructions {
	return asm.Instructions{
		asm.Mov.Reg(asm.R4, asm.R2),
		asm.Add.Imm(asm.R4, n),
		asm.JGT.Reg(asm.R4, asm.R3, "pass"),
	}
}

// lookup jumps to redirect if the key at R10+keyOff is in m.
func lookup(m *ebpf.Map, keyOff int16) asm.Instructions {
	return asm.Instructions{
		asm.LoadMapPtr(asm.R1, m.FD()),
		asm.Mov.Reg(asm.R2, asm.R10),
		asm.Add.Imm(asm.R2, int32(keyOff)),
		asm.FnMapLookupElem.Call(),
		asm.JNE.Imm(asm.R0, 0, "redirect"),
	}
}

// ipv4 checks an IPv4 header at l3.
func ipv4(m *maps, l3 int16) asm.Instructions {
	var p asm.Instructions
	p = append(p, need(int32(l3)+20)...)
	// Destination.
	p = append(p,
		asm.LoadMem(asm.R5, asm.R2, l3+16, asm.Word),
		asm.StoreMem(asm.R10, -4, asm.R5, asm.Word),
	)
	p = append(p, lookup(m.dst4, -4)...)
	// Source {address, port, protocol}: only IHL 5 and TCP/UDP.
	p = append(p, reloadData()...)
	p = append(p, need(int32(l3)+24)...)
	p = append(p,
		asm.LoadMem(asm.R5, asm.R2, l3, asm.Byte),
		asm.JNE.Imm(asm.R5, 0x45, "pass"),
		asm.LoadMem(asm.R4, asm.R2, l3+9, asm.Byte),
		asm.JEq.Imm(asm.R4, 6, fmt.Sprintf("v4src%d", l3)),
		asm.JNE.Imm(asm.R4, 17, "pass"),
		asm.LoadMem(asm.R5, asm.R2, l3+12, asm.Word).WithSymbol(fmt.Sprintf("v4src%d", l3)),
		asm.StoreMem(asm.R10, -16, asm.R5, asm.Word),
		asm.LoadMem(asm.R5, asm.R2, l3+20, asm.Half),
		asm.StoreMem(asm.R10, -12, asm.R5, asm.Half),
		asm.StoreMem(asm.R10, -10, asm.R4, asm.Byte),
		asm.StoreImm(asm.R10, -9, 0, asm.Byte),
	)
	p = append(p, lookup(m.src4, -16)...)
	p = append(p, asm.Ja.Label("pass"))
	return p
}

// ipv6 checks an IPv6 header at l3.
func ipv6(m *maps, l3 int16) asm.Instructions {
	var p asm.Instructions
	p = append(p, need(int32(l3)+40)...)
	p = append(p,
		asm.LoadMem(asm.R5, asm.R2, l3+24, asm.DWord),
		asm.StoreMem(asm.R10, -16, asm.R5, asm.DWord),
		asm.LoadMem(asm.R5, asm.R2, l3+32, asm.DWord),
		asm.StoreMem(asm.R10, -8, asm.R5, asm.DWord),
	)
	p = append(p, lookup(m.dst6, -16)...)
	p = append(p, reloadData()...)
	p = append(p, need(int32(l3)+44)...)
	p = append(p,
		asm.LoadMem(asm.R4, asm.R2, l3+6, asm.Byte),
		asm.JEq.Imm(asm.R4, 6, fmt.Sprintf("v6src%d", l3)),
		asm.JNE.Imm(asm.R4, 17, "pass"),
		asm.LoadMem(asm.R5, asm.R2, l3+8, asm.DWord).WithSymbol(fmt.Sprintf("v6src%d", l3)),
		asm.StoreMem(asm.R10, -24, asm.R5, asm.DWord),
		asm.LoadMem(asm.R5, asm.R2, l3+16, asm.DWord),
		asm.StoreMem(asm.R10, -16, asm.R5, asm.DWord),
		asm.LoadMem(asm.R5, asm.R2, l3+40, asm.Half),
		asm.StoreMem(asm.R10, -8, asm.R5, asm.Half),
		asm.StoreMem(asm.R10, -6, asm.R4, asm.Byte),
		asm.StoreImm(asm.R10, -5, 0, asm.Byte),
	)
	p = append(p, lookup(m.src6, -24)...)
	p = append(p, asm.Ja.Label("pass"))
	return p
}

// program assembles the redirect program.
func program(m *maps) asm.Instructions {
	p := asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
	}
	p = append(p, reloadData()...)
	p = append(p, need(ethHdrLen)...)
	p = append(p,
		asm.LoadMem(asm.R5, asm.R2, 12, asm.Half),
		asm.JEq.Imm(asm.R5, etIPv4, "v4"),
		asm.JEq.Imm(asm.R5, etIPv6, "v6"),
		asm.JNE.Imm(asm.R5, etVLAN, "pass"),
	)
	p = append(p, need(ethHdrLen+vlanHdrLen)...)
	p = append(p,
		asm.LoadMem(asm.R5, asm.R2, 16, asm.Half),
		asm.JEq.Imm(asm.R5, etIPv4, "v4tag"),
		asm.JEq.Imm(asm.R5, etIPv6, "v6tag"),
		asm.Ja.Label("pass"),
	)
	block := func(label string, ins asm.Instructions) {
		ins[0] = ins[0].WithSymbol(label)
		p = append(p, ins...)
	}
	block("v4", ipv4(m, ethHdrLen))
	block("v6", ipv6(m, ethHdrLen))
	block("v4tag", ipv4(m, ethHdrLen+vlanHdrLen))
	block("v6tag", ipv6(m, ethHdrLen+vlanHdrLen))
	p = append(p,
		asm.LoadMapPtr(asm.R1, m.xsks.FD()).WithSymbol("redirect"),
		asm.LoadMem(asm.R2, asm.R6, mdRxQueue, asm.Word),
		asm.Mov.Imm(asm.R3, xdpDrop),
		asm.FnRedirectMap.Call(),
		asm.Return(),
		asm.Mov.Imm(asm.R0, xdpPass).WithSymbol("pass"),
		asm.Return(),
	)
	return p
}

func loadProgram(m *maps) (*ebpf.Program, error) {
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         "tether_xdp",
		Type:         ebpf.XDP,
		License:      "MIT",
		Instructions: program(m),
	})
	if err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return nil, fmt.Errorf("load XDP program: %+v", ve)
		}
		return nil, fmt.Errorf("load XDP program: %w", err)
	}
	return prog, nil
}
