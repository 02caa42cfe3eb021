package e2e

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/tetherlb/tether/api/unit"
)

// TestAdminUnderLoad: eight `tetherctl flows` loops and a status loop run
// against a unit with a million-entry flow table while HTTP keep-alive
// load goes through it. Flow dumps walk the tables in steps between
// packet batches, so every admin call answers and the load sees no
// error; the requests per second with and without the admin loops are
// logged (bench/RESULTS.md has the ratio; this test asserts no speed).
// Then, with the load stopped, `--limit 1` reports as many matching
// flows as a full listing shows.
func TestAdminUnderLoad(t *testing.T) {
	drivers(t, func(t *testing.T, build func(string, int) *LB) {
		lb := build("al", 2)
		if err := lb.StartBackends(8080); err != nil {
			t.Fatal(err)
		}
		cfg := strings.Replace(lbConfig(lb, "nat", []int{1, 1}, 8080, "    snat: [198.51.100.1]\n"), "max: 65536", "max: 1048576", 1)
		u := startUnit(t, lb, cfg)
		const secs = 4
		load := func() LoadResult {
			t.Helper()
			out, err := lb.Exec(lb.Client, append(append([]string{"env"}, RoleCommand("load", "http://192.0.2.10/", "16", fmt.Sprint(secs), "true")...), Self())...)
			if err != nil {
				t.Fatalf("load: %v\n%s", err, out)
			}
			var r LoadResult
			if err := json.Unmarshal([]byte(lastLine(out)), &r); err != nil {
				t.Fatalf("load output %q: %v", out, err)
			}
			if r.Errors > 0 || r.Requests == 0 {
				t.Fatalf("load: %d requests, %d errors", r.Requests, r.Errors)
			}
			return r
		}
		alone := load()

		stop := make(chan struct{})
		var wg sync.WaitGroup
		var mu sync.Mutex
		calls, failures := 0, 0
		var firstFailure string
		loop := func(args ...string) {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				out, err := u.ctl(args...)
				mu.Lock()
				calls++
				if err != nil {
					failures++
					if firstFailure == "" {
						firstFailure = fmt.Sprintf("%v: %s", err, out)
					}
				}
				mu.Unlock()
			}
		}
		for range 8 {
			wg.Add(1)
			go loop("flows", "--limit", "1", "-o", "json")
		}
		wg.Add(1)
		go loop("status", "-o", "json")
		busy := load()
		close(stop)
		wg.Wait()
		t.Logf("keep-alive load: %.0f requests/s alone, %.0f with %d admin calls running (%.2f×)",
			float64(alone.Requests)/alone.Seconds, float64(busy.Requests)/busy.Seconds, calls,
			(float64(busy.Requests)/busy.Seconds)/(float64(alone.Requests)/alone.Seconds))
		if failures > 0 {
			t.Fatalf("%d of %d admin calls failed during the load; first: %s", failures, calls, firstFailure)
		}
		if calls < 9 {
			t.Fatalf("only %d admin calls ran", calls)
		}

		// Quiet now: a page of one counts every match.
		var one, all unit.FlowsReply
		for _, c := range []struct {
			page  *unit.FlowsReply
			limit string
		}{{&one, "1"}, {&all, "10000"}} {
			out, err := u.ctl("flows", "--limit", c.limit, "-o", "json")
			if err != nil || json.Unmarshal([]byte(out), c.page) != nil {
				t.Fatalf("flows --limit %s: %v %s", c.limit, err, out)
			}
		}
		if len(one.Flows) != 1 || one.Matched != len(all.Flows) || all.Matched != len(all.Flows) {
			t.Fatalf("--limit 1: %d shown of %d matching; full listing: %d shown of %d matching", len(one.Flows), one.Matched, len(all.Flows), all.Matched)
		}
		t.Logf("%d flows in the table after the load", all.Matched)
	})
}
