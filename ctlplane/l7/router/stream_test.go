package router

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"runtime"
	"sync"
	"testing"
)

// bodySize is the size of the bodies the streaming tests send: large
// against heapBound, so that a router that buffered a body whole would
// fail them.
const (
	bodySize  = 64 << 20
	heapBound = 24 << 20
)

// heapWatch reads the heap every 4 MiB of a body passing through it and
// keeps the largest growth of HeapInuse over its value at the start.
type heapWatch struct {
	r         io.Reader
	n, since  int64
	base, max uint64
}

func newHeapWatch(r io.Reader) *heapWatch {
	// Collect first, so that garbage of earlier tests does not count.
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return &heapWatch{r: r, base: ms.HeapInuse}
}

func (h *heapWatch) Read(p []byte) (int, error) {
	n, err := h.r.Read(p)
	h.n += int64(n)
	if h.since += int64(n); h.since >= 4<<20 {
		h.since = 0
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		if ms.HeapInuse > h.base {
			h.max = max(h.max, ms.HeapInuse-h.base)
		}
	}
	return n, err
}

func sha(r io.Reader) (string, int64) {
	h := sha256.New()
	n, _ := io.Copy(h, r)
	return hex.EncodeToString(h.Sum(nil)), n
}

func TestLargeDownloadIsStreamed(t *testing.T) {
	if testing.Short() {
		t.Skip("64 MiB through the router")
	}
	h := startHost(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(w, stream(1, bodySize)) // chunked: no Content-Length
	}))
	_, addr := startRouter(t, Config{Decide: to(h.addrPort(), "r")})
	want, _ := sha(stream(1, bodySize))
	c, _ := client(t, true)
	res, err := c.Get("http://" + addr + "/big")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	w := newHeapWatch(res.Body)
	got, n := sha(w)
	if n != bodySize || got != want {
		t.Errorf("downloaded %d bytes, sha256 %s; want %d, %s", n, got, bodySize, want)
	}
	if w.max > heapBound {
		t.Errorf("heap in use grew by %d MiB during a %d MiB download, want under %d MiB", w.max>>20, bodySize>>20, heapBound>>20)
	}
}

func TestLargeUploadIsStreamed(t *testing.T) {
	if testing.Short() {
		t.Skip("64 MiB through the router")
	}
	h := startHost(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sum, _ := sha(r.Body)
		io.WriteString(w, sum)
	}))
	_, addr := startRouter(t, Config{Decide: to(h.addrPort(), "r")})
	want, _ := sha(stream(2, bodySize))
	c, _ := client(t, true)
	w := newHeapWatch(stream(2, bodySize))
	// Chunked too: the body is an io.Reader of unknown length.
	res, err := c.Post("http://"+addr+"/up", "application/octet-stream", w)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	got, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusOK || string(got) != want {
		t.Errorf("host received sha256 %q (status %d), want %s", got, res.StatusCode, want)
	}
	if w.n != bodySize {
		t.Errorf("client sent %d bytes, want %d", w.n, bodySize)
	}
	if w.max > heapBound {
		t.Errorf("heap in use grew by %d MiB during a %d MiB upload, want under %d MiB", w.max>>20, bodySize>>20, heapBound>>20)
	}
}

func TestStreamingResponseIsFlushed(t *testing.T) {
	// Both kinds: the standard proxy flushes event streams and bodies of
	// unknown length on its own; a slow body of known length (a long
	// poll, a progress report) is flushed because the router asks it to.
	for _, length := range []string{"", "27"} {
		t.Run("Content-Length="+length, func(t *testing.T) {
			release := make(chan struct{})
			h := startHost(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if length == "" {
					w.Header().Set("Content-Type", "text/event-stream")
				} else {
					w.Header().Set("Content-Type", "application/octet-stream")
					w.Header().Set("Content-Length", length)
				}
				io.WriteString(w, "data: first\n\n")
				http.NewResponseController(w).Flush()
				<-release // the rest only once the client has the first event
				io.WriteString(w, "data: second\n\n")
			}))
			// Cleanups run last first: the host's handler is let go
			// before the host waits for it, even when the test fails.
			let := sync.OnceFunc(func() { close(release) })
			t.Cleanup(let)
			_, addr := startRouter(t, Config{Decide: to(h.addrPort(), "r")})
			c, _ := client(t, true)
			res, err := c.Get("http://" + addr + "/events")
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			br := bufio.NewReader(res.Body)
			// If the router held the event, this read would wait for
			// the whole response, which waits for this read: the
			// client's timeout fails it.
			if line, err := br.ReadString('\n'); err != nil || line != "data: first\n" {
				t.Fatalf("first line %q, %v; want data: first", line, err)
			}
			let()
			rest, err := io.ReadAll(br)
			if err != nil || string(rest) != "\ndata: second\n\n" {
				t.Errorf("rest %q, %v", rest, err)
			}
		})
	}
}
