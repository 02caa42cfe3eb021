package router

import (
	"errors"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// bufSize is the size of the buffers bodies are copied through, and of
// the transport's own buffers toward hosts.
const bufSize = 32 << 10

// bufferPool is the ReverseProxy's BufferPool: one 32 KiB buffer per
// body being copied, reused, so a large body costs one buffer and no
// more.
type bufferPool struct{}

var buffers = sync.Pool{New: func() any { b := make([]byte, bufSize); return &b }}

// Get implements httputil.BufferPool.Get.
func (bufferPool) Get() []byte { return *buffers.Get().(*[]byte) }

// Put implements httputil.BufferPool.Put.
func (bufferPool) Put(b []byte) {
	if cap(b) == bufSize {
		b = b[:bufSize]
		buffers.Put(&b)
	}
}

// deadlineBody is a request body read under RequestBodyTimeout: the
// read deadline set on the client connection before the proxy starts is
// lifted when the body ends, and a read that hits it is noted so the
// client is answered 408 rather than 502. Any other failed read is noted
// too, so that a client that left is not counted against the host.
type deadlineBody struct {
	io.ReadCloser
	rc   *http.ResponseController
	st   *reqState
	once sync.Once
}

// Read implements io.Reader.Read.
func (b *deadlineBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	switch {
	case err == nil:
	case errors.Is(err, io.EOF):
		b.once.Do(func() { b.rc.SetReadDeadline(time.Time{}) })
	case isTimeout(err):
		b.st.mu.Lock()
		b.st.bodyTimeout = true
		b.st.mu.Unlock()
	default:
		b.st.mu.Lock()
		b.st.bodyFailed = true
		b.st.mu.Unlock()
	}
	return n, err
}

// debugWriter sends the standard library's log lines (a client's TLS
// noise, a body copy cut short) to the router's log at debug level.
type debugWriter struct{ log zerolog.Logger }

func (w debugWriter) Write(p []byte) (int, error) {
	w.log.Debug().Msg(string(trimNewline(p)))
	return len(p), nil
}

func trimNewline(p []byte) []byte {
	for len(p) > 0 && (p[len(p)-1] == '\n' || p[len(p)-1] == '\r') {
		p = p[:len(p)-1]
	}
	return p
}
