package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tetherlb/tether/e2e"
)

// Figures, in table and chart order.
const (
	figKeepAlive = "ka"
	figP50       = "p50"
	figP99       = "p99"
	figNewConn   = "cps"
	figSynRetx   = "synretx"
	figBulk      = "bulk"
	figStream    = "stream"
	figUDPEst    = "udpest"
	figUDPNew    = "udpnew"
	// The l7 rows' time to first byte on new connections, µs: through
	// the VIP, direct to a backend, and what the VIP added at p99.
	figTTFB50   = "ttfb50"
	figTTFB99   = "ttfb99"
	figDirect50 = "direct50"
	figDirect99 = "direct99"
	figAdded99  = "added99"
)

// result is one setup's figures in one run.
type result struct {
	setup setup
	run   int
	vals  map[string]float64
	// errs holds why a figure failed; a figure in neither map does not
	// apply (UDP through HAProxy).
	errs  map[string]string
	notes []string
	// fatal is why the setup could not be measured at all.
	fatal string
	// other is the CPU time other work on the machine took while the
	// loads ran, as a share of one core; -1 if not measured.
	other float64
}

func (r *result) fail(fig string, err error) { r.errs[fig] = err.Error() }

// measure builds the topology, starts the backends and the setup's load
// balancer, runs every load once and removes everything again, on every
// path.
func measure(o options, s setup, st *site, run, idx int, progress func(string, ...any)) *result {
	res := &result{setup: s, run: run, vals: map[string]float64{}, errs: map[string]string{}, other: -1}
	if share := waitQuiet(progress); share >= quietShare {
		progress("WARNING: other work still uses %.0f%% of a core; measuring anyway", 100*share)
	}
	driver := "afxdp"
	if s.driver == "tun" {
		driver = "tun"
	}
	progress("building the topology")
	lb, err := e2e.NewSwitchedLBWith(fmt.Sprintf("%s%d", s.tag, run+1), nBackends, e2e.SwitchedOptions{Driver: driver, KeepOffloads: true})
	if err != nil {
		res.fatal = err.Error()
		progress("FAILED: %v", err)
		return res
	}
	defer func() {
		if err := lb.Close(); err != nil {
			progress("removing the topology: %v", err)
		}
	}()
	if s.l7() {
		measureL7(o, s, st, lb, res, progress)
		return res
	}
	if err := prepare(o, s, st, lb, res); err != nil {
		res.fatal = err.Error()
		progress("FAILED: %v", err)
		return res
	}
	sinks, err := startSinks(lb)
	if err != nil {
		res.fatal = err.Error()
		progress("FAILED: %v", err)
		return res
	}

	ow := watchOtherWork()
	defer func() {
		res.other = ow.end()
		if res.other >= quietShare {
			progress("WARNING: other work on the machine used %.0f%% of a core while this setup ran", 100*res.other)
		}
	}()

	url := "http://" + vip + "/"
	progress("keep-alive requests (wrk, %d connections, %d s)", o.conns, o.secs)
	if w, err := runWrk(lb, st, url, o.conns, o.secs); err != nil {
		res.fail(figKeepAlive, err)
		progress("keep-alive FAILED: %v", err)
	} else if err := w.check(st.indexSize, st.indexSize+512, o.conns); err != nil {
		res.fail(figKeepAlive, err)
		progress("keep-alive FAILED: %v", err)
	} else {
		res.vals[figKeepAlive] = w.rate()
		res.vals[figP50], res.vals[figP99] = w.P50/1000, w.P99/1000
		progress("keep-alive %.0f req/s, p50 %.2f ms, p99 %.2f ms", w.rate(), w.P50/1000, w.P99/1000)
	}

	progress("parallel bulk (wrk, %d connections downloading 1 MiB each, %d s)", o.bulkConns, o.secs)
	if w, err := runWrk(lb, st, url+"1m.bin", o.bulkConns, o.secs); err != nil {
		res.fail(figBulk, err)
		progress("parallel bulk FAILED: %v", err)
	} else if err := w.check(bulkSize, bulkSize+512, o.bulkConns); err != nil {
		res.fail(figBulk, err)
		progress("parallel bulk FAILED: %v", err)
	} else {
		res.vals[figBulk] = float64(w.Bytes) / (1 << 20) / w.seconds()
		progress("parallel bulk %.0f MiB/s", res.vals[figBulk])
	}

	progress("one stream of %d MiB (curl)", st.stream>>20)
	if mib, err := runStream(lb, url+"stream.bin", st.stream); err != nil {
		res.fail(figStream, err)
		progress("one stream FAILED: %v", err)
	} else {
		res.vals[figStream] = mib
		progress("one stream %.0f MiB/s", mib)
	}

	progress("new connections (wrk, Connection: close, %d connections, %d s)", o.conns, o.secs)
	if cps, retx, err := runNewConns(lb, st, url, o); err != nil {
		res.fail(figNewConn, err)
		progress("new connections FAILED: %v", err)
	} else {
		res.vals[figNewConn], res.vals[figSynRetx] = cps, float64(retx)
		progress("new connections %.0f/s, %d SYN retransmissions", cps, retx)
	}

	if s.kind == "haproxy" {
		progress("UDP: not applicable (HAProxy has no UDP)")
		return res
	}
	for _, u := range []struct {
		fig, what, mode string
	}{
		{figUDPEst, "UDP established (256 flows)", "fixed:" + e2e.ClientAddr},
		{figUDPNew, "UDP new flow per packet", "new:" + newFlowSrcs},
	} {
		progress("%s, 64-byte frames, %d s", u.what, o.secs)
		pps, note, err := runUDP(lb, sinks, u.mode, o.secs)
		if err != nil {
			res.fail(u.fig, err)
			progress("%s FAILED: %v", u.what, err)
			continue
		}
		res.vals[u.fig] = pps
		res.notes = append(res.notes, u.what+": "+note)
		progress("%s %.0f packets/s delivered (%s)", u.what, pps, note)
	}
	return res
}

// prepare makes the hosts ready for the setup: the Tether rows' host
// changes (said in the notes), the client's extra addresses, nginx, the
// load balancer, and a request through the VIP.
func prepare(o options, s setup, st *site, lb *e2e.LB, res *result) error {
	switch {
	case s.kind == "tether" && s.driver == "afxdp" && o.offloadsOff:
		changed, err := lb.SenderOffloadsOff()
		if err != nil {
			return err
		}
		res.notes = append(res.notes, "host change for Tether (--afxdp-offloads-off): TX checksum offload, TSO and GSO off on "+strings.Join(changed, ", ")+
			" (what a tetherd that cannot finish the partial checksums a veth hands AF_XDP needs)")
	case s.kind == "tether":
		res.notes = append(res.notes, "no host change for Tether: every interface at its defaults, offloads on")
	}
	if err := addNewFlowSources(lb, st.dir); err != nil {
		return err
	}
	if err := startNginx(lb, st); err != nil {
		return err
	}
	notes, err := startLB(lb, s, o.tetherd, st.dir)
	if err != nil {
		return err
	}
	res.notes = append(res.notes, notes...)
	// The first request proves the path before anything is measured.
	return e2e.Poll(10*time.Second, func() error {
		out, err := lb.Exec(lb.Client, "curl", "-sf", "--max-time", "2", "http://"+vip+"/")
		if err == nil && !strings.Contains(out, "lbbench backend") {
			err = fmt.Errorf("GET / through the VIP answered %q", out)
		}
		return err
	})
}

// wrkScript makes wrk print its totals as one JSON line: exact byte and
// error counts instead of its rounded text.
const wrkScript = `done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('{"duration_us":%d,"requests":%d,"bytes":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,"p50_us":%d,"p99_us":%d}\n',
    summary.duration, summary.requests, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
`

// wrkResult is what wrkScript prints.
type wrkResult struct {
	DurationUS int64   `json:"duration_us"`
	Requests   int64   `json:"requests"`
	Bytes      int64   `json:"bytes"`
	Connect    int64   `json:"connect"`
	Read       int64   `json:"read"`
	Write      int64   `json:"write"`
	Status     int64   `json:"status"`
	Timeout    int64   `json:"timeout"`
	P50        float64 `json:"p50_us"`
	P99        float64 `json:"p99_us"`
}

func (w wrkResult) seconds() float64 { return float64(w.DurationUS) / 1e6 }
func (w wrkResult) rate() float64    { return float64(w.Requests) / w.seconds() }

// check fails a load that saw socket errors or non-2xx answers, or whose
// byte count does not fit its responses: between min and max bytes per
// completed response, allowing one response in flight per connection
// when the time ran out.
func (w wrkResult) check(min, max int64, conns int) error {
	if n := w.Connect + w.Read + w.Write + w.Timeout; n > 0 || w.Status > 0 {
		return fmt.Errorf("wrk saw %d socket errors (connect %d, read %d, write %d, timeout %d) and %d non-2xx/3xx answers",
			n, w.Connect, w.Read, w.Write, w.Timeout, w.Status)
	}
	if w.Requests == 0 || w.DurationUS <= 0 {
		return fmt.Errorf("wrk completed no request (%+v)", w)
	}
	if w.Bytes < w.Requests*min || w.Bytes > (w.Requests+int64(conns))*max {
		return fmt.Errorf("wrk read %d bytes for %d responses: want %d to %d bytes each", w.Bytes, w.Requests, min, max)
	}
	return nil
}

// runWrk runs wrk from the client namespace on core 0, one thread.
func runWrk(lb *e2e.LB, st *site, url string, conns, secs int, extra ...string) (wrkResult, error) {
	script := filepath.Join(st.dir, "done.lua")
	if _, err := os.Stat(script); err != nil {
		if err := os.WriteFile(script, []byte(wrkScript), 0o644); err != nil {
			return wrkResult{}, fmt.Errorf("wrk script: %w", err)
		}
	}
	args := []string{"taskset", "-c", "0", "wrk", "-t1", "-c", strconv.Itoa(conns), "-d", fmt.Sprintf("%ds", secs), "--latency", "-s", script}
	args = append(append(args, extra...), url)
	out, err := lb.Exec(lb.Client, args...)
	if err != nil {
		return wrkResult{}, err
	}
	var w wrkResult
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, `{"duration_us"`) {
			if err := json.Unmarshal([]byte(line), &w); err != nil {
				return w, fmt.Errorf("wrk summary %q: %w", line, err)
			}
			return w, nil
		}
	}
	return w, fmt.Errorf("wrk printed no summary:\n%s", out)
}

// runStream downloads the long stream with curl from the client
// namespace on core 0 and returns MiB/s, failing unless every byte came.
func runStream(lb *e2e.LB, url string, size int64) (float64, error) {
	out, err := lb.Exec(lb.Client, "taskset", "-c", "0", "curl", "-s", "-o", "/dev/null", "--max-time", "55",
		"-w", "%{http_code} %{size_download} %{time_total}", url)
	if err != nil {
		return 0, err
	}
	var code, got int64
	var secs float64
	if _, err := fmt.Sscanf(strings.TrimSpace(out), "%d %d %g", &code, &got, &secs); err != nil {
		return 0, fmt.Errorf("curl printed %q: %w", out, err)
	}
	if code != 200 || got != size || secs <= 0 {
		return 0, fmt.Errorf("curl: HTTP %d, %d bytes of %d in %.2f s", code, got, size, secs)
	}
	return float64(size) / (1 << 20) / secs, nil
}

// runNewConns measures new connections per second (one request each,
// Connection: close) and counts the client's SYN retransmissions.
func runNewConns(lb *e2e.LB, st *site, url string, o options) (float64, int64, error) {
	before, err := synRetrans(lb)
	if err != nil {
		return 0, 0, err
	}
	w, err := runWrk(lb, st, url, o.conns, o.secs, "-H", "Connection: close")
	if err != nil {
		return 0, 0, err
	}
	if err := w.check(st.indexSize, st.indexSize+512, o.conns); err != nil {
		return 0, 0, err
	}
	after, err := synRetrans(lb)
	if err != nil {
		return 0, 0, err
	}
	return w.rate(), after - before, nil
}

// synRetrans reads the client namespace's TcpExtTCPSynRetrans counter.
func synRetrans(lb *e2e.LB) (int64, error) {
	out, err := lb.Exec(lb.Client, "nstat", "-asz", "TcpExtTCPSynRetrans")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "TcpExtTCPSynRetrans" {
			return strconv.ParseInt(f[1], 10, 64)
		}
	}
	return 0, fmt.Errorf("nstat printed no TcpExtTCPSynRetrans:\n%s", out)
}

// runUDP sends 64-byte frames (18-byte payloads) at the VIP for secs
// seconds from the client on core 0 and returns the packets per second
// the backends' sinks received, with a note on what was offered.
func runUDP(lb *e2e.LB, sinks []*e2e.Proc, mode string, secs int) (float64, string, error) {
	before, err := sinkTotal(sinks)
	if err != nil {
		return 0, "", err
	}
	cmd := append([]string{"env"}, e2e.RoleCommand("udpflood", fmt.Sprintf("%s:%d", vip, udpPort), "256", "18", strconv.Itoa(secs), mode)...)
	out, err := lb.Exec(lb.Client, append(cmd, "taskset", "-c", "0", e2e.Self())...)
	if err != nil {
		return 0, "", err
	}
	var flood e2e.LoadResult
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &flood); err != nil {
		return 0, "", fmt.Errorf("udpflood printed %q: %w", out, err)
	}
	time.Sleep(300 * time.Millisecond) // queues drain into the sinks
	after, err := sinkTotal(sinks)
	if err != nil {
		return 0, "", err
	}
	got := after - before
	if flood.Wrapped > 0 {
		return 0, "", fmt.Errorf("udpflood ran out of new tuples: %d packets repeated a flow", flood.Wrapped)
	}
	if flood.Sent == 0 || got == 0 || flood.Seconds <= 0 {
		return 0, "", fmt.Errorf("%d packets sent, %d received", flood.Sent, got)
	}
	if got > flood.Sent {
		return 0, "", fmt.Errorf("sinks counted %d packets of %d sent: something else sends to them", got, flood.Sent)
	}
	note := fmt.Sprintf("%.0f pps offered, %.1f%% delivered", float64(flood.Sent)/flood.Seconds, 100*float64(got)/float64(flood.Sent))
	return float64(got) / flood.Seconds, note, nil
}

// sinkTotal asks every sink for its count (SIGUSR1 makes it print one
// more "received N" line) and adds them up.
func sinkTotal(sinks []*e2e.Proc) (int64, error) {
	var total int64
	for _, s := range sinks {
		seen := strings.Count(s.Output(), "received ")
		if err := s.Signal(syscall.SIGUSR1); err != nil {
			return 0, fmt.Errorf("%s: %w", s.Name, err)
		}
		var n int64
		err := e2e.Poll(2*time.Second, func() error {
			out := s.Output()
			if strings.Count(out, "received ") <= seen {
				return errors.New("no count yet")
			}
			last := out[strings.LastIndex(out, "received "):]
			_, err := fmt.Sscanf(last, "received %d", &n)
			return err
		})
		if err != nil {
			return 0, fmt.Errorf("%s did not report its count: %w\n%s", s.Name, err, s.Output())
		}
		total += n
	}
	return total, nil
}
