package dataplane

import "testing"

// BenchmarkHandOff measures what a frame costs through the workers'
// loop (Worker.step: receive, steer, hand over, take, process, send) on
// in-memory ports, per frame: one worker (no hand-off, the baseline),
// two workers whose queues receive only their own flows (the cost of
// steering), and two workers whose queues receive only the other's
// (steering, two copies, the ring and a buffer from the owner's port).
// Established nat connections, batches of 32.
func BenchmarkHandOff(b *testing.B) {
	for _, c := range []struct {
		name    string
		workers int
		foreign bool
	}{{"1worker", 1, false}, {"2workers/own", 2, false}, {"2workers/foreign", 2, true}} {
		b.Run(c.name, func(b *testing.B) {
			r := newHandOffRig(b, c.workers)
			// 32 connections per worker, each opened on its owner's queue.
			var frames [][]byte
			var at []int
			for w := range c.workers {
				cli := r.ownedClient(w)
				for i := range 32 {
					cli.Port = uint16(10000 + i)
					r.inject(w, syn(cli, vip(80)))
					r.run()
					frames = append(frames, ack(cli, vip(80)))
					q := w
					if c.foreign {
						q = (w + 1) % c.workers
					}
					at = append(at, q)
				}
			}
			count := func([]byte, int64) {}
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				for i, f := range frames {
					if err := r.ports[at[i]].Inject(f, 0); err != nil {
						b.Fatal(err)
					}
				}
				r.settle(count)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(frames)), "ns/frame")
			if _, h := r.stats(); c.foreign && h.Out == 0 {
				b.Fatalf("nothing handed over: %+v", h)
			}
		})
	}
}

// BenchmarkCopyRing measures the ring alone, per frame: the copy in, the
// copy out and the index traffic, batches of 32, on one goroutine (the
// cross-core cache transfer of a real hand-off comes on top).
func BenchmarkCopyRing(b *testing.B) {
	for _, size := range []int{64, 1514} {
		b.Run(map[int]string{64: "64B", 1514: "1514B"}[size], func(b *testing.B) {
			r := newCopyRing(4096, 1518)
			src := make([]byte, size)
			dst := make([]byte, 2048)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for range b.N / 32 {
				for range 32 {
					r.put(src, 0)
				}
				r.publish()
				for range 32 {
					d, _, _ := r.peek()
					copy(dst, d)
					r.next()
				}
				r.release()
			}
		})
	}
}
