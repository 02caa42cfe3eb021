package hostpb

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
)

func tuple4() *Tuple {
	return &Tuple{Proto: Proto_PROTO_TCP, Client: []byte{192, 0, 2, 7}, ClientPort: 40000, Vip: []byte{10, 0, 0, 100}, VipPort: 80}
}

// agentSamples and unitSamples are one valid message of every body; the
// fuzz targets start from them.
func agentSamples() map[string]*AgentMessage {
	return map[string]*AgentMessage{
		"hello-fresh": {Version: Version, Body: &AgentMessage_Hello{Hello: &AgentHello{Host: 7, Boot: 0x1234}}},
		"hello-holding": {Version: Version, Body: &AgentMessage_Hello{Hello: &AgentHello{Host: 7, Boot: 0x1234,
			Holding: &Holding{UnitBoot: 99, Seq: 12, Count: 3, Sum: 0xfeed}}}},
		"ack":             {Version: Version, Body: &AgentMessage_Ack{Ack: &Ack{Seq: 12}}},
		"migrate-failed":  {Version: Version, Body: &AgentMessage_MigrateResult{MigrateResult: &MigrateResult{Id: 6, Error: "no application takes 10.0.0.1:80"}}},
		"migration-ended": {Version: Version, Body: &AgentMessage_MigrationEnded{MigrationEnded: &MigrationEnded{Id: 5, Tuple: tuple4(), Reason: EndReason_END_REASON_CLOSED}}},
		"sessions-resync": {Version: Version, Body: &AgentMessage_Sessions{Sessions: &Sessions{Resync: true, ResyncBegin: true, ResyncEnd: true, Count: 3,
			Up: []*Session{sessionTCP(), sessionClientIP(), sessionAppKey()}}}},
		"sessions-resync-first": {Version: Version, Body: &AgentMessage_Sessions{Sessions: &Sessions{Resync: true, ResyncBegin: true,
			Up: []*Session{sessionTCP()}}}},
		"sessions-resync-last": {Version: Version, Body: &AgentMessage_Sessions{Sessions: &Sessions{Resync: true, ResyncEnd: true, Count: 2,
			Up: []*Session{sessionAppKey()}}}},
		"sessions-changes": {Version: Version, Body: &AgentMessage_Sessions{Sessions: &Sessions{
			Up: []*Session{sessionTCP(), sessionAppKey()}, Down: []*Session{sessionClientIP()}}}},
		"sessions-release": {Version: Version, Body: &AgentMessage_Sessions{Sessions: &Sessions{Resync: true, ResyncBegin: true, ResyncEnd: true}}},
		"listeners": {Version: Version, Body: &AgentMessage_Listeners{Listeners: &Listeners{Endpoints: []*Endpoint{
			{Address: []byte{192, 0, 2, 10}, Port: 80}, {Address: make([]byte, 4), Port: 8080}, {Address: make([]byte, 16), Port: 443}}}}},
		"listeners-none": {Version: Version, Body: &AgentMessage_Listeners{Listeners: &Listeners{}}},
		"listeners-any":  {Version: Version, Body: &AgentMessage_Listeners{Listeners: &Listeners{Any: true}}},
	}
}

func sessionTCP() *Session {
	return &Session{Kind: SessionKind_SESSION_KIND_TCP, Client: []byte{192, 0, 2, 7}, ClientPort: 40000, Vip: []byte{10, 0, 0, 100}, VipPort: 443, Application: "web"}
}

func sessionClientIP() *Session {
	return &Session{Kind: SessionKind_SESSION_KIND_CLIENT_IP, Client: make([]byte, 16), Vip: make([]byte, 16), VipPort: 80, IdleTimeoutMs: 60000}
}

func sessionAppKey() *Session {
	return &Session{Kind: SessionKind_SESSION_KIND_APP_KEY, Key: []byte("{b7595cc9-e68b-4eb0-9bf1-bb717b31d447}"), Vip: []byte{10, 0, 0, 100}, VipPort: 443, Application: "web"}
}

func unitSamples() map[string]*UnitMessage {
	v6 := &Tuple{Proto: Proto_PROTO_UDP, Client: make([]byte, 16), ClientPort: 5353, Vip: make([]byte, 16), VipPort: 53}
	return map[string]*UnitMessage{
		"hello-none": {Version: Version, Body: &UnitMessage_Hello{Hello: &UnitHello{Unit: "unit-a", Boot: 99, Host: 7, Resync: Resync_RESYNC_NONE, Seq: 12}}},
		"hello-full": {Version: Version, Body: &UnitMessage_Hello{Hello: &UnitHello{Unit: "unit-a", Boot: 100, Host: 7, Resync: Resync_RESYNC_FULL, Seq: 3, Sessions: true, Listeners: true,
			TunnelSources: [][]byte{{10, 0, 0, 1}, make([]byte, 16)}}}},
		"mappings": {Version: Version, Body: &UnitMessage_Mappings{Mappings: &Mappings{Seq: 13,
			Add: []*Mapping{{FlowId: 1, Tuple: tuple4()}, {FlowId: 9, Tuple: v6}}, Remove: []uint32{4, 5}}}},
		"resync-end": {Version: Version, Body: &UnitMessage_ResyncEnd{ResyncEnd: &ResyncEnd{Seq: 3, Count: 2, Sum: 77}}},
		"migrate":    {Version: Version, Body: &UnitMessage_Migrate{Migrate: migrateSample()}},
		"migrate6":   {Version: Version, Body: &UnitMessage_Migrate{Migrate: migrateSample6()}},
	}
}

func migrateSample() *Migrate {
	data := []byte("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	return &Migrate{Id: 5, FlowId: 1<<31 | 9, Seq: 14, Data: data, State: &TCPState{
		Client: []byte{10, 1, 0, 2}, ClientPort: 40000, Vip: []byte{10, 0, 0, 100}, VipPort: 80,
		RemoteIsn: 1000, LocalIsn: 0xfffffff0, SndNxt: 0xfffffff1, RcvNxt: 1001 + uint32(len(data)),
		SndWnd: 64240 << 7, SndWl1: 1001, RcvWnd: 65535, WindowScaling: true, SndWscale: 7, RcvWscale: 7,
		Mss: 1460, SackPermitted: true, Timestamps: true, TsVal: 77, TsRecent: 99}}
}

// migrateSample6 is migrateSample's connection over IPv6.
func migrateSample6() *Migrate {
	m := migrateSample()
	m.State.Client = netip.MustParseAddr("2001:db8:9::2").AsSlice()
	m.State.Vip = netip.MustParseAddr("2001:db8:50::50").AsSlice()
	m.State.Mss = 1440
	return m
}

func TestValidSamples(t *testing.T) {
	for name, m := range agentSamples() {
		if err := ValidateAgent(m); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	for name, m := range unitSamples() {
		if err := ValidateUnit(m); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// TestValidateRefuses: every rule, broken once, is refused with
// ErrInvalid or ErrVersion.
func TestValidateRefuses(t *testing.T) {
	hello := func(f func(*AgentHello)) *AgentMessage {
		h := &AgentHello{Host: 7, Boot: 1}
		f(h)
		return &AgentMessage{Version: Version, Body: &AgentMessage_Hello{Hello: h}}
	}
	agents := map[string]*AgentMessage{
		"version 0":         {Body: &AgentMessage_Ack{Ack: &Ack{}}},
		"version 1":         {Version: 1, Body: &AgentMessage_Ack{Ack: &Ack{}}},
		"no body":           {Version: Version},
		"empty hello":       {Version: Version, Body: &AgentMessage_Hello{}},
		"empty ack":         {Version: Version, Body: &AgentMessage_Ack{}},
		"host 0":            hello(func(h *AgentHello) { h.Host = 0 }),
		"boot 0":            hello(func(h *AgentHello) { h.Boot = 0 }),
		"holding of boot 0": hello(func(h *AgentHello) { h.Holding = &Holding{Seq: 1} }),
		"empty result":      {Version: Version, Body: &AgentMessage_MigrateResult{}},
		"result id 0":       {Version: Version, Body: &AgentMessage_MigrateResult{MigrateResult: &MigrateResult{Error: "x"}}},
		"long error": {Version: Version, Body: &AgentMessage_MigrateResult{MigrateResult: &MigrateResult{Id: 1,
			Error: strings.Repeat("e", MaxMigrateError+1)}}},
		"empty ended":     {Version: Version, Body: &AgentMessage_MigrationEnded{}},
		"ended id 0":      {Version: Version, Body: &AgentMessage_MigrationEnded{MigrationEnded: &MigrationEnded{Tuple: tuple4(), Reason: EndReason_END_REASON_CLOSED}}},
		"ended reason":    {Version: Version, Body: &AgentMessage_MigrationEnded{MigrationEnded: &MigrationEnded{Id: 1, Tuple: tuple4()}}},
		"ended tuple":     {Version: Version, Body: &AgentMessage_MigrationEnded{MigrationEnded: &MigrationEnded{Id: 1, Reason: EndReason_END_REASON_CLOSED}}},
		"empty listeners": {Version: Version, Body: &AgentMessage_Listeners{}},
		"listener address of 5 bytes": {Version: Version, Body: &AgentMessage_Listeners{Listeners: &Listeners{Endpoints: []*Endpoint{
			{Address: make([]byte, 5), Port: 80}}}}},
		"listener without an address": {Version: Version, Body: &AgentMessage_Listeners{Listeners: &Listeners{Endpoints: []*Endpoint{{Port: 80}}}}},
		"listener port 0": {Version: Version, Body: &AgentMessage_Listeners{Listeners: &Listeners{Endpoints: []*Endpoint{
			{Address: []byte{192, 0, 2, 10}}}}}},
		"listener port 65536": {Version: Version, Body: &AgentMessage_Listeners{Listeners: &Listeners{Endpoints: []*Endpoint{
			{Address: []byte{192, 0, 2, 10}, Port: 65536}}}}},
		"listener twice": {Version: Version, Body: &AgentMessage_Listeners{Listeners: &Listeners{Endpoints: []*Endpoint{
			{Address: []byte{192, 0, 2, 10}, Port: 80}, {Address: []byte{192, 0, 2, 10}, Port: 80}}}}},
		"any with endpoints": {Version: Version, Body: &AgentMessage_Listeners{Listeners: &Listeners{Any: true, Endpoints: []*Endpoint{
			{Address: []byte{192, 0, 2, 10}, Port: 80}}}}},
		"too many listeners": {Version: Version, Body: &AgentMessage_Listeners{Listeners: manyListeners(MaxListeners + 1)}},
	}
	sess := func(f func(*Sessions)) *AgentMessage {
		b := &Sessions{Up: []*Session{sessionTCP()}, Down: []*Session{sessionAppKey()}}
		f(b)
		return &AgentMessage{Version: Version, Body: &AgentMessage_Sessions{Sessions: b}}
	}
	one := func(f func(*Session)) *AgentMessage {
		return sess(func(b *Sessions) { f(b.Up[0]) })
	}
	ip := func(f func(*Session)) *AgentMessage {
		return sess(func(b *Sessions) { b.Up[0] = sessionClientIP(); f(b.Up[0]) })
	}
	key := func(f func(*Session)) *AgentMessage {
		return sess(func(b *Sessions) { b.Down[0] = sessionAppKey(); f(b.Down[0]) })
	}
	maps := map[string]*AgentMessage{
		"empty sessions":         {Version: Version, Body: &AgentMessage_Sessions{}},
		"too many sessions":      sess(func(b *Sessions) { b.Up = slices.Repeat([]*Session{sessionTCP()}, MaxSessionBatch) }),
		"begin without resync":   sess(func(b *Sessions) { b.Down = nil; b.ResyncBegin = true }),
		"end without resync":     sess(func(b *Sessions) { b.Down = nil; b.ResyncEnd = true }),
		"down in a resync":       sess(func(b *Sessions) { b.Resync = true }),
		"count without end":      sess(func(b *Sessions) { b.Down = nil; b.Resync = true; b.Count = 1 }),
		"count too large":        sess(func(b *Sessions) { b.Down = nil; b.Resync, b.ResyncEnd, b.Count = true, true, MaxHostSessions+1 }),
		"one-batch count wrong":  sess(func(b *Sessions) { b.Down = nil; b.Resync, b.ResyncBegin, b.ResyncEnd, b.Count = true, true, true, 2 }),
		"up twice":               sess(func(b *Sessions) { b.Up = append(b.Up, sessionTCP()) }),
		"up and down":            sess(func(b *Sessions) { b.Down = append(b.Down, sessionTCP()) }),
		"twice, other app":       sess(func(b *Sessions) { s := sessionTCP(); s.Application = "other"; b.Down = append(b.Down, s) }),
		"nil session":            sess(func(b *Sessions) { b.Up = append(b.Up, nil) }),
		"kind 0":                 one(func(s *Session) { s.Kind = 0 }),
		"kind 9":                 one(func(s *Session) { s.Kind = 9 }),
		"long application":       one(func(s *Session) { s.Application = strings.Repeat("a", MaxApplication+1) }),
		"newline in application": one(func(s *Session) { s.Application = "a\nb" }),
		"tcp mixed families":     one(func(s *Session) { s.Vip = make([]byte, 16) }),
		"tcp 5-byte addresses":   one(func(s *Session) { s.Client, s.Vip = make([]byte, 5), make([]byte, 5) }),
		"tcp port 0":             one(func(s *Session) { s.ClientPort = 0 }),
		"tcp port 65536":         one(func(s *Session) { s.VipPort = 65536 }),
		"tcp with key":           one(func(s *Session) { s.Key = []byte("k") }),
		"tcp with timeout":       one(func(s *Session) { s.IdleTimeoutMs = 5 }),
		"ip no client":           ip(func(s *Session) { s.Client = nil }),
		"ip client port":         ip(func(s *Session) { s.ClientPort = 1 }),
		"ip key":                 ip(func(s *Session) { s.Key = []byte("k") }),
		"ip scope family":        ip(func(s *Session) { s.Vip = []byte{10, 0, 0, 1} }),
		"ip scope no port":       ip(func(s *Session) { s.VipPort = 0 }),
		"ip port without vip":    ip(func(s *Session) { s.Vip = nil }),
		"ip timeout 0":           ip(func(s *Session) { s.IdleTimeoutMs = 0 }),
		"ip timeout too long":    ip(func(s *Session) { s.IdleTimeoutMs = uint32(MaxIdleTimeout/time.Millisecond) + 1 }),
		"key empty":              key(func(s *Session) { s.Key = nil }),
		"key too long":           key(func(s *Session) { s.Key = make([]byte, MaxSessionKey+1) }),
		"key no vip":             key(func(s *Session) { s.Vip = nil }),
		"key vip port 0":         key(func(s *Session) { s.VipPort = 0 }),
		"key with client":        key(func(s *Session) { s.Client = []byte{1, 2, 3, 4} }),
		"key with timeout":       key(func(s *Session) { s.IdleTimeoutMs = 1 }),
	}
	for name, m := range maps {
		agents[name] = m
	}
	for name, m := range agents {
		if err := ValidateAgent(m); !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrVersion) {
			t.Errorf("agent %s: got %v, want a refusal", name, err)
		}
	}
	uhello := func(f func(*UnitHello)) *UnitMessage {
		h := &UnitHello{Unit: "u", Boot: 1, Host: 7, Resync: Resync_RESYNC_NONE}
		f(h)
		return &UnitMessage{Version: Version, Body: &UnitMessage_Hello{Hello: h}}
	}
	batch := func(f func(*Mappings)) *UnitMessage {
		m := &Mappings{Seq: 1, Add: []*Mapping{{FlowId: 1, Tuple: tuple4()}}}
		f(m)
		return &UnitMessage{Version: Version, Body: &UnitMessage_Mappings{Mappings: m}}
	}
	tup := func(f func(*Tuple)) *UnitMessage {
		return batch(func(m *Mappings) { f(m.Add[0].Tuple) })
	}
	mig := func(f func(*Migrate)) *UnitMessage {
		m := migrateSample()
		f(m)
		return &UnitMessage{Version: Version, Body: &UnitMessage_Migrate{Migrate: m}}
	}
	many := make([]uint32, MaxBatch+1)
	for i := range many {
		many[i] = uint32(i)
	}
	units := map[string]*UnitMessage{
		"version 3":                {Version: 3, Body: &UnitMessage_ResyncEnd{ResyncEnd: &ResyncEnd{}}},
		"no body":                  {Version: Version},
		"empty resync end":         {Version: Version, Body: &UnitMessage_ResyncEnd{}},
		"empty mappings":           {Version: Version, Body: &UnitMessage_Mappings{}},
		"no unit name":             uhello(func(h *UnitHello) { h.Unit = "" }),
		"long unit name":           uhello(func(h *UnitHello) { h.Unit = strings.Repeat("u", MaxUnitName+1) }),
		"space in name":            uhello(func(h *UnitHello) { h.Unit = "unit a" }),
		"unit boot 0":              uhello(func(h *UnitHello) { h.Boot = 0 }),
		"unit host 0":              uhello(func(h *UnitHello) { h.Host = 0 }),
		"resync 0":                 uhello(func(h *UnitHello) { h.Resync = Resync_RESYNC_UNSPECIFIED }),
		"resync 9":                 uhello(func(h *UnitHello) { h.Resync = 9 }),
		"tunnel source of 5 bytes": uhello(func(h *UnitHello) { h.TunnelSources = [][]byte{{1, 2, 3, 4, 5}} }),
		"too many tunnel sources": uhello(func(h *UnitHello) {
			for range MaxTunnelSources + 1 {
				h.TunnelSources = append(h.TunnelSources, []byte{10, 0, 0, 1})
			}
		}),
		"seq 0":            batch(func(m *Mappings) { m.Seq = 0 }),
		"nil mapping":      batch(func(m *Mappings) { m.Add = append(m.Add, nil) }),
		"added twice":      batch(func(m *Mappings) { m.Add = append(m.Add, &Mapping{FlowId: 1, Tuple: tuple4()}) }),
		"removed twice":    batch(func(m *Mappings) { m.Remove = []uint32{3, 3} }),
		"too many removed": batch(func(m *Mappings) { m.Remove = many }),
		"no tuple":         batch(func(m *Mappings) { m.Add[0].Tuple = nil }),
		"icmp":             tup(func(t *Tuple) { t.Proto = 1 }),
		"mixed families":   tup(func(t *Tuple) { t.Vip = make([]byte, 16) }),
		"5-byte address":   tup(func(t *Tuple) { t.Client = make([]byte, 5); t.Vip = make([]byte, 5) }),
		"port 0":           tup(func(t *Tuple) { t.ClientPort = 0 }),
		"port 65536":       tup(func(t *Tuple) { t.VipPort = 65536 }),
		"empty migrate":    {Version: Version, Body: &UnitMessage_Migrate{}},
		"migrate id 0":     mig(func(m *Migrate) { m.Id = 0 }),
		"no state":         mig(func(m *Migrate) { m.State = nil }),
		"flow ID 0":        mig(func(m *Migrate) { m.FlowId = 0 }),
		"migrate seq 0":    mig(func(m *Migrate) { m.Seq = 0 }),
		"too much data": mig(func(m *Migrate) {
			m.Data = make([]byte, MaxMigrateData+1)
			m.State.RcvNxt = m.State.RemoteIsn + 1 + uint32(len(m.Data))
		}),
		"migrate mixed families": mig(func(m *Migrate) { m.State.Vip = migrateSample6().State.Vip }),
		"migrate 5-byte addresses": mig(func(m *Migrate) {
			m.State.Client, m.State.Vip = make([]byte, 5), make([]byte, 5)
		}),
		"ipv6 migrate unspecified": mig(func(m *Migrate) { m.State.Client = make([]byte, 16); m.State.Vip = make([]byte, 16) }),
		"migrate port 0":           mig(func(m *Migrate) { m.State.VipPort = 0 }),
		"rcv_nxt off":              mig(func(m *Migrate) { m.State.RcvNxt++ }),
		"snd_nxt off":              mig(func(m *Migrate) { m.State.SndNxt++ }),
		"mss 0":                    mig(func(m *Migrate) { m.State.Mss = 0 }),
		"wscale 15":                mig(func(m *Migrate) { m.State.SndWscale = 15 }),
		"scale unannounced":        mig(func(m *Migrate) { m.State.WindowScaling = false }),
		"window too wide":          mig(func(m *Migrate) { m.State.RcvWnd = 65536 << 7 }),
	}
	for name, m := range units {
		if err := ValidateUnit(m); !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrVersion) {
			t.Errorf("unit %s: got %v, want a refusal", name, err)
		}
	}
}

// TestMigrateAddresses: a Migrate's client and VIP are both IPv4 or
// both IPv6, and an IPv6 one is an address the host can bind and
// connect a socket to as the message gives it; each refusal says why.
func TestMigrateAddresses(t *testing.T) {
	migrate := func(client, vip string) *UnitMessage {
		m := migrateSample()
		m.State.Client = netip.MustParseAddr(client).AsSlice()
		m.State.Vip = netip.MustParseAddr(vip).AsSlice()
		return &UnitMessage{Version: Version, Body: &UnitMessage_Migrate{Migrate: m}}
	}
	for _, tc := range []struct {
		client, vip string
		want        string // "" for valid; else what the error says
	}{
		{"10.1.0.2", "10.0.0.100", ""},
		{"2001:db8:9::2", "2001:db8:50::50", ""},
		{"fd00:7::9", "fd00:7::1", ""},
		{"::1", "::1", ""},
		{"10.1.0.2", "2001:db8:50::50", "addresses of 4 and 16 bytes"},
		{"2001:db8:9::2", "10.0.0.100", "addresses of 16 and 4 bytes"},
		{"::ffff:10.1.0.2", "2001:db8:50::50", "client ::ffff:10.1.0.2 is IPv4-mapped"},
		{"::ffff:10.1.0.2", "::ffff:10.0.0.100", "IPv4-mapped"},
		{"2001:db8:9::2", "::ffff:10.0.0.100", "vip ::ffff:10.0.0.100 is IPv4-mapped"},
		{"fe80::2", "2001:db8:50::50", "client fe80::2 is link-local"},
		{"2001:db8:9::2", "fe80::1", "vip fe80::1 is link-local"},
		{"ff02::1", "2001:db8:50::50", "client ff02::1 is not a unicast address"},
		{"2001:db8:9::2", "ff0e::50", "vip ff0e::50 is not a unicast address"},
		{"::", "2001:db8:50::50", "client :: is not a unicast address"},
		{"2001:db8:9::2", "::", "vip :: is not a unicast address"},
	} {
		err := ValidateUnit(migrate(tc.client, tc.vip))
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s → %s: %v, want valid", tc.client, tc.vip, err)
		case tc.want != "" && (!errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s → %s: %v, want a refusal saying %q", tc.client, tc.vip, err, tc.want)
		}
	}
}

// TestBatchFitsMessage: the largest valid batch (IPv6, MaxBatch
// additions and removals, the largest IDs and ports) fits MaxMessage.
func TestBatchFitsMessage(t *testing.T) {
	m := &Mappings{Seq: ^uint64(0)}
	for i := range MaxBatch {
		id := ^uint32(0) - uint32(i)
		tp := &Tuple{Proto: Proto_PROTO_UDP, Client: make([]byte, 16), ClientPort: 65535, Vip: make([]byte, 16), VipPort: 65535}
		m.Add = append(m.Add, &Mapping{FlowId: id, Tuple: tp})
		m.Remove = append(m.Remove, id)
	}
	msg := &UnitMessage{Version: Version, Body: &UnitMessage_Mappings{Mappings: m}}
	if err := ValidateUnit(msg); err != nil {
		t.Fatal(err)
	}
	if n := proto.Size(msg); n > MaxMessage {
		t.Fatalf("largest batch is %d bytes, MaxMessage %d", n, MaxMessage)
	}
}

// TestSessionBatchFitsMessage: the largest valid Sessions batch (the
// longest keys and application names) fits MaxMessage.
func TestSessionBatchFitsMessage(t *testing.T) {
	b := &Sessions{Resync: true, ResyncBegin: true, ResyncEnd: true, Count: MaxSessionBatch}
	for i := range MaxSessionBatch {
		k := make([]byte, MaxSessionKey)
		k[0], k[1] = byte(i), byte(i>>8)
		b.Up = append(b.Up, &Session{Kind: SessionKind_SESSION_KIND_APP_KEY, Key: k, Vip: make([]byte, 16), VipPort: 65535,
			Application: strings.Repeat("a", MaxApplication)})
	}
	msg := &AgentMessage{Version: Version, Body: &AgentMessage_Sessions{Sessions: b}}
	if err := ValidateAgent(msg); err != nil {
		t.Fatal(err)
	}
	if n := proto.Size(msg); n > MaxMessage {
		t.Fatalf("largest sessions batch is %d bytes, MaxMessage %d", n, MaxMessage)
	}
}

// manyListeners is n distinct IPv6 endpoints.
func manyListeners(n int) *Listeners {
	l := &Listeners{}
	for i := range n {
		a := make([]byte, 16)
		a[0], a[14], a[15] = 0x20, byte(i>>8), byte(i)
		l.Endpoints = append(l.Endpoints, &Endpoint{Address: a, Port: 65535})
	}
	return l
}

// TestListenersFitMessage: the largest valid Listeners (MaxListeners
// IPv6 endpoints) fits MaxMessage.
func TestListenersFitMessage(t *testing.T) {
	msg := &AgentMessage{Version: Version, Body: &AgentMessage_Listeners{Listeners: manyListeners(MaxListeners)}}
	if err := ValidateAgent(msg); err != nil {
		t.Fatal(err)
	}
	if n := proto.Size(msg); n > MaxMessage {
		t.Fatalf("largest listeners message is %d bytes, MaxMessage %d", n, MaxMessage)
	}
}

// TestEndpointOf: an endpoint goes out unmapped and comes back the same.
func TestEndpointOf(t *testing.T) {
	for _, s := range []string{"192.0.2.10:80", "0.0.0.0:8080", "[2001:db8::1]:443", "[::ffff:192.0.2.10]:80"} {
		ap := netip.MustParseAddrPort(s)
		got, err := EndpointOf(ap).AddrPort()
		if want := netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()); err != nil || got != want {
			t.Errorf("%s: %v, %v; want %v", s, got, err, want)
		}
	}
}

// TestSessionIDs: identities differ field by field, and the fields
// that only describe a session are not part of them.
func TestSessionIDs(t *testing.T) {
	seen := map[string]string{}
	add := func(name string, s *Session) {
		t.Helper()
		if err := ValidSession(s); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if other, dup := seen[SessionID(s)]; dup {
			t.Errorf("%s has the identity of %s", name, other)
		}
		seen[SessionID(s)] = name
	}
	add("tcp", sessionTCP())
	for name, f := range map[string]func(*Session){
		"client":      func(s *Session) { s.Client = []byte{192, 0, 2, 8} },
		"client port": func(s *Session) { s.ClientPort++ },
		"vip":         func(s *Session) { s.Vip = []byte{10, 0, 0, 101} },
		"vip port":    func(s *Session) { s.VipPort++ },
	} {
		s := sessionTCP()
		f(s)
		add(name, s)
	}
	add("client ip", sessionClientIP())
	unscoped := sessionClientIP()
	unscoped.Vip, unscoped.VipPort = nil, 0
	add("client ip unscoped", unscoped)
	add("app key", sessionAppKey())
	longer := sessionAppKey()
	longer.Key = append(longer.Key, 0)
	add("app key longer", longer)
	same := sessionTCP()
	same.Application = "other"
	if SessionID(same) != SessionID(sessionTCP()) {
		t.Error("the application changed a session's identity")
	}
}

// TestMappingSumDiffers: the sum tells mappings apart field by field.
func TestMappingSumDiffers(t *testing.T) {
	base := &Mapping{FlowId: 5, Tuple: tuple4()}
	seen := map[uint64]string{MappingSum(base): "base"}
	for name, f := range map[string]func(*Mapping){
		"flow":        func(m *Mapping) { m.FlowId = 6 },
		"proto":       func(m *Mapping) { m.Tuple.Proto = Proto_PROTO_UDP },
		"client":      func(m *Mapping) { m.Tuple.Client = []byte{192, 0, 2, 8} },
		"client port": func(m *Mapping) { m.Tuple.ClientPort++ },
		"vip":         func(m *Mapping) { m.Tuple.Vip = []byte{10, 0, 0, 101} },
		"vip port":    func(m *Mapping) { m.Tuple.VipPort++ },
	} {
		m := proto.Clone(base).(*Mapping)
		f(m)
		s := MappingSum(m)
		if other, dup := seen[s]; dup {
			t.Errorf("%s sums as %s", name, other)
		}
		seen[s] = name
	}
}

// FuzzAgentMessage: decoding and validating any bytes never panics, and
// a valid message survives re-encoding unchanged.
func FuzzAgentMessage(f *testing.F) {
	for _, m := range agentSamples() {
		b, _ := proto.Marshal(m)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var m AgentMessage
		if proto.Unmarshal(b, &m) != nil || ValidateAgent(&m) != nil {
			return
		}
		if ss := m.GetSessions(); ss != nil {
			// A valid batch names each session once, and so counts
			// distinct identities.
			ids := map[string]bool{}
			for _, s := range append(slices.Clone(ss.GetUp()), ss.GetDown()...) {
				ids[SessionID(s)] = true
			}
			if len(ids) != len(ss.GetUp())+len(ss.GetDown()) {
				t.Fatalf("valid batch of %d sessions has %d identities", len(ss.GetUp())+len(ss.GetDown()), len(ids))
			}
		}
		again, err := proto.Marshal(&m)
		if err != nil {
			t.Fatal(err)
		}
		var m2 AgentMessage
		if err := proto.Unmarshal(again, &m2); err != nil || ValidateAgent(&m2) != nil || !proto.Equal(&m, &m2) {
			t.Fatalf("valid message did not survive re-encoding: %v", err)
		}
	})
}

// FuzzUnitMessage is FuzzAgentMessage for the unit's messages.
func FuzzUnitMessage(f *testing.F) {
	for _, m := range unitSamples() {
		b, _ := proto.Marshal(m)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var m UnitMessage
		if proto.Unmarshal(b, &m) != nil || ValidateUnit(&m) != nil {
			return
		}
		if add := m.GetMappings().GetAdd(); len(add) > 0 {
			_ = MappingSum(add[0])
		}
		again, err := proto.Marshal(&m)
		if err != nil {
			t.Fatal(err)
		}
		var m2 UnitMessage
		if err := proto.Unmarshal(again, &m2); err != nil || ValidateUnit(&m2) != nil || !proto.Equal(&m, &m2) {
			t.Fatalf("valid message did not survive re-encoding: %v", err)
		}
	})
}

// TestWriteCorpus rewrites testdata/fuzz from the samples when
// HOSTPB_WRITE_CORPUS is set (after a message changes shape).
func TestWriteCorpus(t *testing.T) {
	if os.Getenv("HOSTPB_WRITE_CORPUS") == "" {
		t.Skip("HOSTPB_WRITE_CORPUS not set")
	}
	write := func(target, name string, m proto.Message) {
		b, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		dir := filepath.Join("testdata", "fuzz", target)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for name, m := range agentSamples() {
		write("FuzzAgentMessage", name, m)
	}
	for name, m := range unitSamples() {
		write("FuzzUnitMessage", name, m)
	}
}
