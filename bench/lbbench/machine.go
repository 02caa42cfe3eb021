package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The machine is shared: another engineer's tests may run during a
// benchmark and take the cores it measures. otherWork measures how much
// CPU time processes other than this harness and its descendants used
// (kernel threads excepted: softirq work is the benchmark's own), so
// that a row measured on a busy machine says so.

// clockTicks is USER_HZ, the unit of /proc/PID/stat's times: 100 on
// every Linux architecture Go supports.
const clockTicks = 100

// procTimes reads every process's parent and CPU time (user + system,
// in ticks).
func procTimes() map[int][2]uint64 {
	out := map[int][2]uint64{} // pid → {ppid, ticks}
	paths, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			continue // it exited meanwhile
		}
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) < 13 {
			continue
		}
		pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
		ppid, _ := strconv.ParseUint(f[1], 10, 64)
		ut, _ := strconv.ParseUint(f[11], 10, 64)
		st, _ := strconv.ParseUint(f[12], 10, 64)
		out[pid] = [2]uint64{ppid, ut + st}
	}
	return out
}

// foreign reports whether pid is neither this process, nor one of its
// descendants, nor a kernel thread.
func foreign(procs map[int][2]uint64, pid, self int) bool {
	for p, hops := pid, 0; p > 0 && hops < 64; hops++ {
		if p == self || p == 2 {
			return false
		}
		info, ok := procs[p]
		if !ok {
			return true
		}
		p = int(info[0])
	}
	return pid != 2
}

// otherWork samples foreign CPU time in the background until stop.
type otherWork struct {
	mu    sync.Mutex
	ticks uint64
	start time.Time
	stop  chan struct{}
	done  chan struct{}
}

func watchOtherWork() *otherWork {
	w := &otherWork{start: time.Now(), stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		self := os.Getpid()
		last := procTimes()
		t := time.NewTicker(500 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-w.stop:
				return
			case <-t.C:
			}
			now := procTimes()
			var add uint64
			for pid, info := range now {
				if prev, ok := last[pid]; ok && info[1] >= prev[1] && foreign(now, pid, self) {
					add += info[1] - prev[1]
				}
			}
			w.mu.Lock()
			w.ticks += add
			w.mu.Unlock()
			last = now
		}
	}()
	return w
}

// end stops the sampling and returns the foreign CPU time as a share of
// one core over the time watched.
func (w *otherWork) end() float64 {
	close(w.stop)
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	secs := time.Since(w.start).Seconds()
	if secs <= 0 {
		return 0
	}
	return float64(w.ticks) / clockTicks / secs
}

// Other work above quietShare of a core is worth waiting out before a
// setup starts, up to quietWait.
const (
	quietShare = 0.10
	quietWait  = 60 * time.Second
)

// waitQuiet waits until other work uses less than quietShare of a core
// over a second, or quietWait passes, and returns the last share seen.
func waitQuiet(progress func(string, ...any)) float64 {
	deadline := time.Now().Add(quietWait)
	for said := false; ; said = true {
		w := watchOtherWork()
		time.Sleep(1100 * time.Millisecond)
		share := w.end()
		if share < quietShare || time.Now().After(deadline) {
			return share
		}
		if !said {
			progress("other work on the machine uses %.0f%% of a core: waiting up to %s for it to end", 100*share, quietWait)
		}
	}
}
