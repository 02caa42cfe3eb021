package config

import (
	"net/netip"
	"time"

	"github.com/tetherlb/tether/api/unit"
)

// Config is the whole configuration of a unit.
type Config struct {
	Unit      Unit      `mapstructure:"unit"`
	Forwarder Forwarder `mapstructure:"forwarder"`
	L2        L2        `mapstructure:"l2"`
	Admin     Admin     `mapstructure:"admin"`
	Health    Health    `mapstructure:"health"`
	VIPs      []VIP     `mapstructure:"vips"`

	// Hosts is the unit's end of the host streams (issue 13; hosts.go).
	Hosts Hosts `mapstructure:"hosts"`

	// Cluster makes the unit a member of a cluster of units (issue 15;
	// cluster.go); nil: the unit is alone.
	Cluster *Cluster `mapstructure:"cluster"`

	// BGP announces the VIPs to routers (bgp.go); nil: nothing is
	// announced.
	BGP *BGP `mapstructure:"bgp"`
}

// Health configures this unit's end of the health-and-load protocol:
// where host agents send, how long a silent host lives, and how new
// connections are allotted from the consolidated cache.
type Health struct {
	// Listen is the UDP address agents send to, e.g. 10.0.0.1:7310;
	// "" runs no listener (VIPs may still use probes).
	Listen string `mapstructure:"listen"`
	// UnitID identifies this unit to agents; 0 derives it from
	// unit.name.
	UnitID int `mapstructure:"unit_id"`
	// KeyFile was protocol 1's shared secret; it is refused with a
	// pointer to Auth (a key every host held let any host speak for
	// any other).
	KeyFile string `mapstructure:"key_file"`
	// Missed is how many heartbeat periods a host may miss before it
	// ages out.
	Missed int `mapstructure:"missed"`
	// StartupGrace is how long after start a backend nobody has
	// reported on yet still takes new connections, so that a
	// restarting unit does not refuse everything until agents speak.
	StartupGrace time.Duration `mapstructure:"startup_grace"`
	Allotment    Allotment     `mapstructure:"allotment"`

	// Auth is who may speak for which host, and for how long a
	// datagram counts (issue 13: health protocol security).
	Auth HealthAuth `mapstructure:"auth"`
}

// HealthAuth configures the health protocol's per-host identity and
// replay protection.
type HealthAuth struct {
	// MasterKeyFile holds the secret every host's key is derived from
	// (`tetherd health-key` derives one); "" accepts unauthenticated
	// datagrams, whose host IDs and endpoints nothing checks.
	MasterKeyFile string `mapstructure:"master_key_file"`
	// Freshness is how far a datagram's send time may be from this
	// unit's clock: older ones (replays) are refused. Hosts' and units'
	// clocks must agree to well within it (NTP).
	Freshness time.Duration `mapstructure:"freshness"`
}

// Allotment sizes the batches of new connections the health-and-load
// cache hands out.
type Allotment struct {
	// Tokens is how many new connections one allotment covers.
	Tokens int `mapstructure:"tokens"`
	// Duration is how long an allotment lives; older tokens are thrown
	// away and a new allotment is made from current health and load.
	Duration time.Duration `mapstructure:"duration"`
}

// Health sources of a VIP's backends.
const (
	SourceNone  = "none"  // the configuration alone: weights and states as written
	SourceAgent = "agent" // rows reported by tether-agent on each host
	SourceProbe = "probe" // this unit probes each backend itself
)

// VIPHealth says where a VIP's backends' health and load come from.
type VIPHealth struct {
	// Source is none, agent or probe.
	Source string `mapstructure:"source"`
	// Check is the health probe each unit runs (source probe).
	Check HealthCheck `mapstructure:"check"`
}

// HealthCheck is a health probe a unit runs against each backend of a
// VIP.
type HealthCheck struct {
	// Type is tcp or http.
	Type string `mapstructure:"type"`
	// Port to probe; 0 probes the backend's port.
	Port int `mapstructure:"port"`
	// Path and Expect: http only.
	Path   string `mapstructure:"path"`
	Expect int    `mapstructure:"expect"`
	// Interval between probes and Timeout of each.
	Interval time.Duration `mapstructure:"interval"`
	Timeout  time.Duration `mapstructure:"timeout"`
	// Rise and Fall are consecutive results that change the health.
	Rise int `mapstructure:"rise"`
	Fall int `mapstructure:"fall"`
}

// Admin configures the control process's operator interfaces.
type Admin struct {
	// Socket is the admin API's Unix socket.
	Socket string `mapstructure:"socket"`
	// Group may use the admin socket besides root; "" for root only.
	Group string `mapstructure:"group"`
	// RunDir holds the forwarder channel socket and PID file.
	RunDir string `mapstructure:"run_dir"`
	// Metrics is the address of a Prometheus listener, e.g.
	// 127.0.0.1:9469; "" (the default) serves no metrics.
	Metrics string `mapstructure:"metrics"`
}

// Unit describes this Tether unit.
type Unit struct {
	// Name identifies the unit in logs and to other units.
	Name string `mapstructure:"name"`
	// Address4 and Address6 are the unit's own addresses: the source of
	// tunnel and IP-in-IP packets it sends to backends. Required for
	// each family a tunnel, ipip or l7 VIP uses.
	Address4 string `mapstructure:"address4"`
	Address6 string `mapstructure:"address6"`
	// MAC is the source address of frames the unit sends. Empty: reuse
	// the destination address of the frame being forwarded, which is the
	// receiving interface's own.
	MAC string `mapstructure:"mac"`

	addr4, addr6 netip.Addr
	mac          [6]byte
	hasMAC       bool
}

// Forwarder tunes the dataplane.
type Forwarder struct {
	// Workers is the number of forwarding workers (flow-table shards).
	Workers int `mapstructure:"workers"`
	// Batch is how many frames a worker takes from a port at once.
	Batch int `mapstructure:"batch"`
	// AnswerPing makes the forwarder answer ICMP echo requests sent to a
	// VIP address itself.
	AnswerPing bool      `mapstructure:"answer_ping"`
	Flows      Flows     `mapstructure:"flows"`
	Fragments  Fragments `mapstructure:"fragments"`
	// Port is the packet I/O the forwarder runs on.
	Port Port `mapstructure:"port"`
	// Cores pins workers: worker i runs on Cores[i]. Empty: unpinned.
	Cores []int `mapstructure:"cores"`
	// TTL is what the unit does with a forwarded packet's TTL (IPv6:
	// hop limit): "decrement", as the router hop it is in every mode
	// (ipip: the inner packet's), dropping a packet that arrives with 1
	// or 0; or "keep", leaving it as the client sent it, which hides the
	// unit from traceroute and lets TTL 1 through.
	TTL string `mapstructure:"ttl"`
}

// TTL policies.
const (
	TTLDecrement = "decrement"
	TTLKeep      = "keep"
)

// Port drivers.
const (
	DriverTUN   = "tun"   // a TUN device; the kernel routes VIP traffic into it
	DriverAFXDP = "afxdp" // AF_XDP sockets on an existing interface
)

// Port selects and configures the forwarder's packet I/O.
type Port struct {
	// Driver is tun or afxdp.
	Driver string `mapstructure:"driver"`
	// Interface is the TUN device to create, or the interface AF_XDP
	// binds to.
	Interface string `mapstructure:"interface"`
	// MTU of a TUN device; 0 keeps the kernel's default.
	MTU int `mapstructure:"mtu"`
	// Queues is how many device queues AF_XDP binds, one socket each.
	// With as many workers as queues each worker serves one queue and
	// hands the frames another worker's flows own to that worker (the
	// device's hash knows nothing of translated replies); with one queue
	// and several workers a dispatcher spreads the flows over the
	// workers (software RSS). A TUN port has one queue.
	Queues int `mapstructure:"queues"`
	// Table is the routing table a TUN port's half-NAT return path uses:
	// half-NAT backends reply to the client's own address, so the
	// forwarder adds policy rules that look this table up for packets
	// from each half-NAT backend's address, port and protocol, and a
	// default route in it into the device; otherwise the kernel would
	// forward the replies to the client untranslated. The table is the
	// forwarder's alone (it removes rules that look it up and that it
	// does not want), so two units on one host need two tables. 0 adds
	// nothing, for operators who route the replies themselves. AF_XDP
	// ports ignore it: their XDP program catches the replies.
	Table int `mapstructure:"table"`
	// QueueLength is how many packets the kernel queues for the
	// forwarder: a TUN device's txqueuelen, or the entries of each
	// AF_XDP ring (rounded up to a power of two; the UMEM holds twice as
	// many 4 KiB frames, 64 MiB per queue at the default). The kernel's
	// own defaults (500 for TUN, 2048 rings before) overflow under a few
	// hundred concurrent TCP transfers, whose bursts then lose 5-20% of
	// their packets (see bench/RESULTS.md); a longer queue absorbs the
	// bursts at the cost of memory and of as much latency as it holds
	// when the forwarder falls behind.
	QueueLength int `mapstructure:"queue_length"`
	// PinDir is the directory, on a BPF filesystem, where an AF_XDP port
	// pins its XDP link, so that the program outlives a forwarder (or a
	// whole unit) that is killed and drops Tether's traffic until the
	// next forwarder takes over, rather than let the kernel have it. The
	// filesystem must outlive the unit's processes: the host's
	// /sys/fs/bpf, or, for a unit run under ip netns exec (which gives it
	// a /sys of its own), a BPF filesystem mounted elsewhere before it
	// starts. TUN ports ignore it.
	PinDir string `mapstructure:"pin_dir"`
	// Offload makes a TUN port exchange packets with the kernel behind
	// virtio-net headers, with checksum and TCP segmentation offload:
	// TCP super-packets of up to 64 KiB cross the device whole, their
	// checksums left partial (see nic.Offload). Off, every packet is
	// segmented and checksummed by the kernel before Tether sees it.
	// AF_XDP ports ignore it (they finish partial checksums themselves).
	Offload bool `mapstructure:"offload"`
}

// DefaultPinDir is forwarder.port.pin_dir's default.
const DefaultPinDir = "/sys/fs/bpf/tether"

// DefaultQueueLength is forwarder.port.queue_length's default, and
// MaxQueueLength its bound.
const (
	DefaultQueueLength = 8192
	MaxQueueLength     = 1 << 16
)

// DefaultReturnTable is forwarder.port.table's default: a number far
// from the small ones people pick by hand (100, 200), so that it is
// unlikely to be in use already.
const DefaultReturnTable = 8384

// Flows sizes and ages the flow table.
type Flows struct {
	// Max bounds the flow-table entries of each family per worker. A
	// translated (nat, halfnat) connection takes two entries.
	Max      int      `mapstructure:"max"`
	Timeouts Timeouts `mapstructure:"timeouts"`
}

// Timeouts are idle timeouts by protocol and TCP state.
type Timeouts struct {
	TCPSyn         time.Duration `mapstructure:"tcp_syn"`
	TCPEstablished time.Duration `mapstructure:"tcp_established"`
	TCPFin         time.Duration `mapstructure:"tcp_fin"`
	TCPClosed      time.Duration `mapstructure:"tcp_closed"`
	UDP            time.Duration `mapstructure:"udp"`
	// UDPUnreplied is the idle timeout of a nat or halfnat UDP flow
	// whose backend never answered.
	UDPUnreplied time.Duration `mapstructure:"udp_unreplied"`
	Other        time.Duration `mapstructure:"other"`
}

// Fragments bounds the handling of IP fragments.
type Fragments struct {
	// Datagrams is how many fragmented datagrams each worker tracks at
	// once (the first fragment's decision is remembered for the rest).
	Datagrams int `mapstructure:"datagrams"`
	// Pending is how many fragments that arrive before their first
	// fragment a worker holds back.
	Pending int `mapstructure:"pending"`
	// Timeout is how long a datagram's decision and held fragments live.
	Timeout time.Duration `mapstructure:"timeout"`
}

// L2 says where frames go on Ethernet ports.
type L2 struct {
	// GatewayMAC is the next hop for destinations not in Neighbors.
	GatewayMAC string `mapstructure:"gateway_mac"`
	// Neighbors are on-link hosts and their MAC addresses.
	Neighbors []Neighbor `mapstructure:"neighbors"`

	gateway    [6]byte
	hasGateway bool
}

// Neighbor is an on-link host.
type Neighbor struct {
	IP  string `mapstructure:"ip"`
	MAC string `mapstructure:"mac"`

	addr netip.Addr
	mac  [6]byte
}

// VIP is a virtual service: an address, port and protocol, and the
// backends that serve it.
type VIP struct {
	Name     string `mapstructure:"name"`
	Address  string `mapstructure:"address"`
	Port     int    `mapstructure:"port"`
	Protocol string `mapstructure:"protocol"`
	// Mode is nat, halfnat, tunnel, ipip or l7 (api/unit.Mode's
	// names). An l7 VIP's backends are hosts reached as in tunnel mode.
	Mode string `mapstructure:"mode"`
	// SNAT is the pool of source addresses for nat mode.
	SNAT []string `mapstructure:"snat"`
	// SNATStandby are other units' SNAT addresses (nat mode, a unit of a
	// cluster): this unit takes the replies to them when the router
	// sends it a dead unit's addresses, for the connections it took over,
	// and never gives them to new connections.
	SNATStandby []string `mapstructure:"snat_standby"`
	// SNATPorts is the source port range for nat mode, "low-high".
	SNATPorts string `mapstructure:"snat_ports"`
	// MaglevSize is the size of the VIP's Maglev table, a prime.
	MaglevSize int `mapstructure:"maglev_size"`
	// MTU of the path to the backends; ipip clamps the TCP MSS of SYNs to
	// fit the encapsulation in it and drops larger packets.
	MTU int `mapstructure:"mtu"`
	// Punt makes the control process decide each new flow: the forwarder
	// holds the flow's first packet and asks. (The path sessions,
	// affinity and migration take.) Without a control process the
	// forwarder decides by Maglev as usual.
	Punt bool `mapstructure:"punt"`
	// Health says where the backends' health and load come from.
	Health VIPHealth `mapstructure:"health"`
	// L7 is mode l7's request reading and rules (l7.go); filled with
	// defaults for an l7 VIP, refused on any other.
	L7       *L7       `mapstructure:"l7"`
	Backends []Backend `mapstructure:"backends"`

	addr            netip.Addr
	snat            []netip.Addr
	snatStandby     []netip.Addr
	portLow, portHi uint16
	protoNum        uint8
	mode            unit.Mode
}

// Backend is one instance behind a VIP.
type Backend struct {
	// Name identifies the backend within its VIP; it keys the Maglev
	// permutation, so keep it stable. Default: address:port.
	Name    string `mapstructure:"name"`
	Address string `mapstructure:"address"`
	// Port defaults to the VIP's port. Ignored by tunnel, ipip and l7,
	// which keep the client's destination port.
	Port int `mapstructure:"port"`
	// Weight is relative; 0 takes no new flows. Default 1.
	Weight *int `mapstructure:"weight"`
	// State is active (the default), draining or inactive
	// (api/unit.State's names).
	State string `mapstructure:"state"`

	addr netip.Addr
}

// Addr4 returns the unit's IPv4 address (invalid when unset).
func (u *Unit) Addr4() netip.Addr { return u.addr4 }

// Addr6 returns the unit's IPv6 address (invalid when unset).
func (u *Unit) Addr6() netip.Addr { return u.addr6 }

// HardwareAddr returns the unit's MAC and whether one is configured.
func (u *Unit) HardwareAddr() ([6]byte, bool) { return u.mac, u.hasMAC }

// Gateway returns the gateway MAC and whether one is configured.
func (l *L2) Gateway() ([6]byte, bool) { return l.gateway, l.hasGateway }

// Addr returns the neighbor's address.
func (n *Neighbor) Addr() netip.Addr { return n.addr }

// HardwareAddr returns the neighbor's MAC.
func (n *Neighbor) HardwareAddr() [6]byte { return n.mac }

// Addr returns the VIP's address.
func (v *VIP) Addr() netip.Addr { return v.addr }

// ModeValue returns the VIP's forwarding mode.
func (v *VIP) ModeValue() unit.Mode { return v.mode }

// ProtoNum returns the VIP's IP protocol number.
func (v *VIP) ProtoNum() uint8 { return v.protoNum }

// SNATAddrs returns the parsed SNAT pool.
func (v *VIP) SNATAddrs() []netip.Addr { return v.snat }

// SNATStandbyAddrs returns the parsed standby SNAT addresses.
func (v *VIP) SNATStandbyAddrs() []netip.Addr { return v.snatStandby }

// SNATPortRange returns the SNAT port range.
func (v *VIP) SNATPortRange() (low, high uint16) { return v.portLow, v.portHi }

// Addr returns the backend's address.
func (b *Backend) Addr() netip.Addr { return b.addr }

// StateValue returns the backend's state (active when unset).
func (b *Backend) StateValue() unit.State {
	if s, err := unit.ParseState(b.State); err == nil {
		return s
	}
	return unit.StateActive
}

// WeightValue returns the backend's weight.
func (b *Backend) WeightValue() int {
	if b.Weight == nil {
		return 1
	}
	return *b.Weight
}
