package nic

import (
	"errors"
	"time"
)

// LinkType says what a frame starts with.
type LinkType uint8

const (
	// LinkEthernet frames start with an Ethernet header.
	LinkEthernet LinkType = iota + 1
	// LinkIP frames start with an IPv4 or IPv6 header (TUN devices,
	// raw-IP captures).
	LinkIP
)

// String names the link type.
func (l LinkType) String() string {
	switch l {
	case LinkEthernet:
		return "ethernet"
	case LinkIP:
		return "ip"
	}
	return "unknown"
}

// Headroom is the space drivers leave in front of a received frame. It
// covers the largest header the dataplane prepends (an IPv6 header for
// IPv6-in-IPv6, 40 bytes) with room to spare for a VLAN tag.
const Headroom = 128

// Frame is one packet in a buffer a port owns. The frame's bytes are
// Buf[Off:Off+Len]; the bytes before Off are headroom.
type Frame struct {
	Buf []byte // the whole buffer
	Off int    // where the frame starts in Buf
	Len int    // frame length
	// Time is when the frame was received in Unix nanoseconds, or 0 when
	// the driver does not know. Capture replay uses it as the clock.
	Time int64
	// Handle identifies the buffer to its driver (a UMEM address, a slot
	// index); the dataplane does not interpret it.
	Handle uint64
	// Offload is what the frame leaves to the device, on a port that
	// says so (TUN with virtio-net headers); zero otherwise.
	Offload Offload
}

// Offload describes a frame whose transport checksum, or whose cutting
// into segments, is left to the device, as a virtio-net header does: the
// kernel hands such frames to a TUN device that asked for them, and takes
// them back, so that one header rewrite moves up to 64 KiB.
type Offload struct {
	// CsumStart is where the transport header starts, counted from the
	// frame's first byte, and CsumOffset where its checksum field lies
	// within it. They mean something only when Partial is set.
	CsumStart, CsumOffset uint16
	// GSOSize is the transport payload of each segment the frame is to
	// be cut into; 0 for a frame that goes out whole.
	GSOSize uint16
	// GSO says how to cut the frame (GSOTCPv4, GSOTCPv6), with GSOECN
	// when the segments carry ECN's congestion-window-reduced flag.
	GSO uint8
	// Partial: the checksum field holds only the sum of the
	// pseudo-header (not complemented); the device adds the transport
	// header and payload from CsumStart on and stores the checksum.
	Partial bool
}

// GSO types of Offload.GSO, virtio-net's numbers.
const (
	GSONone  = 0
	GSOTCPv4 = 1
	GSOTCPv6 = 4
	GSOECN   = 0x80
)

// Data returns the frame's bytes.
func (f *Frame) Data() []byte { return f.Buf[f.Off : f.Off+f.Len] }

// Prepend grows the frame by n bytes at the front and returns the new
// frame bytes. It reports false, changing nothing, when the headroom is
// smaller than n.
func (f *Frame) Prepend(n int) ([]byte, bool) {
	if n > f.Off {
		return nil, false
	}
	f.Off -= n
	f.Len += n
	if f.Offload.Partial {
		f.Offload.CsumStart += uint16(n)
	}
	return f.Data(), true
}

// TrimFront removes n bytes from the front of the frame. It reports
// false, changing nothing, when the frame is shorter than n.
func (f *Frame) TrimFront(n int) bool {
	if n > f.Len {
		return false
	}
	f.Off += n
	f.Len -= n
	if f.Offload.Partial {
		f.Offload.CsumStart -= uint16(n)
	}
	return true
}

// Port moves batches of frames between a device and the dataplane. A
// Port is used by one goroutine at a time.
type Port interface {
	// Name identifies the port in logs and counters.
	Name() string
	// LinkType says what received frames start with and what
	// transmitted frames must start with.
	LinkType() LinkType
	// Receive fills frames with up to len(frames) received frames and
	// returns how many. It does not block: 0 means nothing is waiting.
	// It returns io.EOF when a finite source (a capture) is exhausted.
	// The caller owns the returned frames until it hands each back
	// through Transmit or Release.
	Receive(frames []Frame) (int, error)
	// Transmit sends frames and takes ownership of all of them. It
	// returns how many were sent; the port counts and reuses the rest.
	Transmit(frames []Frame) (int, error)
	// Release gives back frames that will not be transmitted.
	Release(frames []Frame)
	// Stats returns the port's own counters.
	Stats() Stats
	// Close releases the port's resources.
	Close() error
}

// Stats are counters a port keeps about itself.
type Stats struct {
	RxFrames, RxBytes uint64
	TxFrames, TxBytes uint64
	// TxDropped counts frames handed to Transmit that were not sent.
	TxDropped uint64
	// RxDropped counts frames the port could not hand over (no free
	// buffer, oversize).
	RxDropped uint64
	// KernelDropped counts frames the kernel dropped before the port
	// could take them: an AF_XDP socket's full receive ring or empty
	// fill ring, a TUN device's full queue. They never reached a worker,
	// so no drop reason counts them.
	KernelDropped uint64
}

// Add adds o's counters to s.
func (s *Stats) Add(o Stats) {
	s.RxFrames += o.RxFrames
	s.RxBytes += o.RxBytes
	s.TxFrames += o.TxFrames
	s.TxBytes += o.TxBytes
	s.TxDropped += o.TxDropped
	s.RxDropped += o.RxDropped
	s.KernelDropped += o.KernelDropped
}

// KernelDropper is implemented by ports whose kernel side drops frames
// (see Stats.KernelDropped). Unlike Stats, KernelDropped may be called
// from any goroutine while the port runs.
type KernelDropper interface {
	KernelDropped() uint64
}

// ErrClosed is returned by a port's methods after Close.
var ErrClosed = errors.New("nic: port closed")

// Waiter is implemented by ports that can block until a frame arrives; an
// idle worker waits instead of spinning.
type Waiter interface {
	// Wait returns when a frame may be ready, when Wake is called, or
	// after timeout.
	Wait(timeout time.Duration) error
	// Wake makes the Wait in progress, or the next one, return at once.
	// Any goroutine may call it.
	Wake()
}

// Allocator is implemented by ports that can lend a free buffer to fill
// with a frame that did not come from the port's own receive path (a
// frame another worker received and handed over, the fragments of a
// packet too big for a tunnel). The caller owns the
// frame until it hands it back through Transmit or Release, like a
// received one.
type Allocator interface {
	// Alloc returns a free buffer as an empty frame (Len 0, Off at
	// Headroom; its capacity is len(Buf)-Off), or false when none is
	// free now.
	Alloc() (Frame, bool)
}
