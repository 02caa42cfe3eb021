package pcapio

import (
	"bufio"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
	"github.com/klauspost/compress/zstd"

	"github.com/tetherlb/tether/nic"
)

// MaxFrame is the largest frame the port reads; longer captured frames
// are counted as RxDropped and skipped. 64 KiB covers jumbo frames and
// the GSO super-packets a capture on a veth can contain.
const MaxFrame = 65536

// buffers is how many frames the port can lend at once.
const buffers = 256

type packetReader interface {
	ReadPacketData() ([]byte, gopacket.CaptureInfo, error)
}

// peeked is a packetReader whose first answer was read ahead.
type peeked struct {
	r    packetReader
	done bool
	data []byte
	ci   gopacket.CaptureInfo
	err  error
}

func (p *peeked) ReadPacketData() ([]byte, gopacket.CaptureInfo, error) {
	if p.done {
		return p.r.ReadPacketData()
	}
	p.done = true
	data, ci, err := p.data, p.ci, p.err
	p.data = nil
	return data, ci, err
}

// Port is a nic.Port that reads one capture and writes another.
type Port struct {
	name   string
	link   nic.LinkType
	inLink layers.LinkType // the capture's (first) link type
	in     packetReader
	out    *pcapgo.Writer
	outBuf *bufio.Writer
	nic.Buffers
	eof   bool
	stats nic.Stats
	// cut is the number of the record the capture ends inside, 0 when it
	// ends where a record does.
	cut uint64
	// notIP counts frames not delivered because they are not IP and the
	// port delivers raw IP (link.go).
	notIP uint64
	// unzip releases the decompressor of a compressed capture.
	unzip func()
}

var (
	_ nic.Port      = (*Port)(nil)
	_ nic.Allocator = (*Port)(nil)
)

// New reads frames from in (pcap or pcapng, either of them compressed
// with gzip or zstd) and, when out is not nil, writes transmitted frames
// to it as pcap (uncompressed) with in's link type.
func New(name string, in io.Reader, out io.Writer) (*Port, error) {
	br := bufio.NewReader(in)
	magic, err := br.Peek(4)
	if err != nil {
		return nil, fmt.Errorf("pcapio: read capture header: %w", err)
	}
	var unzip func() // releases the decompressor
	switch {
	case magic[0] == 0x1f && magic[1] == 0x8b:
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("pcapio: read gzip header: %w", err)
		}
		br, unzip = bufio.NewReader(zr), func() { zr.Close() }
	case binary.LittleEndian.Uint32(magic) == zstdMagic:
		zr, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(zstdMaxMemory))
		if err != nil {
			return nil, fmt.Errorf("pcapio: read zstd header: %w", err)
		}
		br, unzip = bufio.NewReader(zr), zr.Close
	}
	if unzip != nil {
		if magic, err = br.Peek(4); err != nil {
			unzip()
			return nil, fmt.Errorf("pcapio: read compressed capture header: %w", err)
		}
	}
	p, err := newPort(name, br, magic, out)
	if err != nil {
		if unzip != nil {
			unzip()
		}
		return nil, err
	}
	p.unzip = unzip
	return p, nil
}

// zstdMagic starts a zstd frame (RFC 8878), as a little-endian load.
const zstdMagic = 0xfd2fb528

// zstdMaxMemory bounds what a zstd stream may make the decoder hold (its
// window): captures are compressed by tools with windows of a few MiB.
const zstdMaxMemory = 256 << 20

func newPort(name string, br *bufio.Reader, magic []byte, out io.Writer) (*Port, error) {
	var r packetReader
	var lt layers.LinkType
	if magic[0] == 0x0a && magic[1] == 0x0d && magic[2] == 0x0d && magic[3] == 0x0a {
		// Mixed link types: each frame says its interface's, and is
		// converted (the default skips frames of a link type other than
		// the first interface's, uncounted).
		ng, err := pcapgo.NewNgReader(br, pcapgo.NgReaderOptions{WantMixedLinkType: true})
		if err != nil {
			return nil, fmt.Errorf("pcapio: read pcapng header: %w", err)
		}
		// The reader then reads interfaces as they come: the first
		// one's link type is known once a packet (or the end) is.
		first := &peeked{r: ng}
		first.data, first.ci, first.err = ng.ReadPacketData()
		intf, err := ng.Interface(0)
		if err != nil {
			return nil, fmt.Errorf("pcapio: pcapng file without an interface: %w", err)
		}
		r, lt = first, intf.LinkType
	} else {
		pr, err := pcapgo.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("pcapio: read pcap header: %w", err)
		}
		r, lt = pr, pr.LinkType()
	}
	link, err := portLink(lt)
	if err != nil {
		return nil, err
	}
	p := &Port{name: name, link: link, inLink: lt, in: r, Buffers: nic.NewBuffers(buffers, nic.Headroom+MaxFrame)}
	if out != nil {
		p.outBuf = bufio.NewWriter(out)
		p.out = pcapgo.NewWriterNanos(p.outBuf)
		if err := p.out.WriteFileHeader(MaxFrame, outputLink(lt, link)); err != nil {
			return nil, fmt.Errorf("pcapio: write capture header: %w", err)
		}
	}
	return p, nil
}

// Name implements nic.Port.Name.
func (p *Port) Name() string { return p.name }

// LinkType implements nic.Port.LinkType.
func (p *Port) LinkType() nic.LinkType { return p.link }

// Receive implements nic.Port.Receive. It returns io.EOF once the capture
// is exhausted and no frame was read.
func (p *Port) Receive(frames []nic.Frame) (int, error) {
	n := 0
	for n < len(frames) && p.Free() > 0 && !p.eof {
		data, ci, err := p.in.ReadPacketData()
		if errors.Is(err, io.EOF) {
			p.eof = true
			break
		}
		if errors.Is(err, io.ErrUnexpectedEOF) {
			// The file ends inside a record (a capture cut short, a
			// copy interrupted): the record is lost, and said so.
			p.stats.RxDropped++
			p.cut = p.stats.RxFrames + p.stats.RxDropped
			p.eof = true
			break
		}
		if err != nil {
			return n, fmt.Errorf("pcapio: %s: read frame %d: %w", p.name, p.stats.RxFrames+p.stats.RxDropped+1, err)
		}
		if ci.CaptureLength < ci.Length {
			// Cut short by the capture's snap length: forwarding a
			// truncated frame would corrupt it.
			p.stats.RxDropped++
			continue
		}
		lt := p.inLink
		if len(ci.AncillaryData) > 0 {
			if l, ok := ci.AncillaryData[0].(layers.LinkType); ok {
				lt = l // this frame's interface's, in a pcapng file
			}
		}
		f, _ := p.Alloc() // one is free: the loop's condition
		size, notIP, tooLong := convert(f.Buf[nic.Headroom:], data, lt, p.link)
		if notIP || tooLong {
			// Not IP where the port delivers raw IP, or oversize.
			p.Put(f.Handle)
			p.stats.RxDropped++
			if notIP {
				p.notIP++
			}
			continue
		}
		f.Len, f.Time = size, ci.Timestamp.UnixNano()
		frames[n] = f
		p.stats.RxFrames++
		p.stats.RxBytes += uint64(size)
		n++
	}
	if n == 0 && p.eof {
		return 0, io.EOF
	}
	return n, nil
}

// NotIP returns how many frames were not delivered because they are not
// IP and the port delivers raw IP (a cooked capture's ARP, say). They
// are counted in Stats().RxDropped too.
func (p *Port) NotIP() uint64 { return p.notIP }

// Truncated returns the number (from 1) of the record the capture ends
// inside, or 0 when it ends where a record does. That record is counted
// in Stats().RxDropped and never delivered.
func (p *Port) Truncated() uint64 { return p.cut }

// Transmit implements nic.Port.Transmit: frames are written to the output
// capture, if there is one, and their buffers reused.
func (p *Port) Transmit(frames []nic.Frame) (int, error) {
	var err error
	sent := 0
	for i := range frames {
		fr := &frames[i]
		if p.out != nil && err == nil {
			ci := gopacket.CaptureInfo{Timestamp: time.Unix(0, fr.Time).UTC(), CaptureLength: fr.Len, Length: fr.Len}
			if err = p.out.WritePacket(ci, fr.Data()); err != nil {
				err = fmt.Errorf("pcapio: %s: write frame: %w", p.name, err)
			}
		}
		if err != nil {
			p.stats.TxDropped++
		} else {
			sent++
			p.stats.TxFrames++
			p.stats.TxBytes += uint64(fr.Len)
		}
		p.Put(fr.Handle)
	}
	return sent, err
}

// Stats implements nic.Port.Stats.
func (p *Port) Stats() nic.Stats { return p.stats }

// Close flushes the output capture and releases a compressed capture's
// decompressor. It does not close the reader or writer it was given.
func (p *Port) Close() error {
	if p.unzip != nil {
		p.unzip()
		p.unzip = nil
	}
	if p.outBuf != nil {
		if err := p.outBuf.Flush(); err != nil {
			return fmt.Errorf("pcapio: %s: flush: %w", p.name, err)
		}
	}
	return nil
}
