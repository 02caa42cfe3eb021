package appliance

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/tetherlb/tether/internal/localapi"
)

// AdminPortName is the virtio-serial port name the host gives the admin
// channel: qemu -device virtserialport,name=tether.admin,chardev=….
const AdminPortName = "tether.admin"

// relay carries HTTP requests arriving on the virtio-serial port to the
// local API socket and writes the answers back. The host side is a Unix
// socket qemu serves (only its owner can open it), so tetherctl there
// talks to the unit as it would inside: `tetherctl --socket PATH status`.
//
// A virtio-serial port is one byte stream that outlives the host's
// connections: a read returns end-of-file while no host client is
// connected. The relay therefore parses requests itself, and forgets any
// half-read request whenever the host side goes away, so that the next
// client starts clean. Requests are served one at a time, which is all
// a console channel needs.
type relay struct {
	dev    string
	socket string
	log    func(string, ...any)
	client *http.Client
}

func newRelay(dev, socket string, log func(string, ...any)) *relay {
	return &relay{dev: dev, socket: socket, log: log, client: localapi.HTTPClient(socket, 60*time.Second)}
}

// run serves until ctx ends.
func (r *relay) run(ctx context.Context) {
	for ctx.Err() == nil {
		f, err := os.OpenFile(r.dev, os.O_RDWR, 0)
		if err != nil {
			r.log("admin channel %s: %v; retrying", r.dev, err)
			sleepCtx(ctx, 5*time.Second)
			continue
		}
		r.serve(ctx, f)
		f.Close()
	}
}

func (r *relay) serve(ctx context.Context, f *os.File) {
	br := bufio.NewReader(f)
	for ctx.Err() == nil {
		req, err := http.ReadRequest(br)
		switch {
		case err == nil:
		case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
			// No host client (or it left mid-request): drop what was
			// buffered and wait for the next.
			br.Reset(f)
			sleepCtx(ctx, 100*time.Millisecond)
			continue
		default:
			var pe *os.PathError
			if errors.As(err, &pe) {
				r.log("admin channel %s: %v", r.dev, err)
				return
			}
			writeError(f, http.StatusBadRequest, "malformed request: "+err.Error())
			br.Reset(f)
			continue
		}
		resp := r.forward(ctx, req)
		if err := resp.Write(f); err != nil {
			br.Reset(f) // the host left while we answered
		}
		resp.Body.Close()
	}
}

// forward sends one request to the local API.
func (r *relay) forward(ctx context.Context, in *http.Request) *http.Response {
	defer in.Body.Close()
	body, err := io.ReadAll(io.LimitReader(in.Body, 32<<20))
	if err != nil {
		return errorResponse(http.StatusBadRequest, "read the request: "+err.Error())
	}
	out, err := http.NewRequestWithContext(ctx, in.Method, "http://tether"+in.URL.RequestURI(), bytes.NewReader(body))
	if err != nil {
		return errorResponse(http.StatusBadRequest, err.Error())
	}
	if ct := in.Header.Get("Content-Type"); ct != "" {
		out.Header.Set("Content-Type", ct)
	}
	resp, err := r.client.Do(out)
	if err != nil {
		return errorResponse(http.StatusBadGateway, fmt.Sprintf("the appliance's API at %s does not answer: %v", r.socket, err))
	}
	// Read it whole so that the answer on the port has a length and the
	// local connection is free again.
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return errorResponse(http.StatusBadGateway, "read the answer: "+err.Error())
	}
	return &http.Response{StatusCode: resp.StatusCode, ProtoMajor: 1, ProtoMinor: 1, Header: resp.Header,
		ContentLength: int64(len(b)), Body: io.NopCloser(bytes.NewReader(b))}
}

func errorResponse(code int, msg string) *http.Response {
	b := []byte(fmt.Sprintf("{\"error\":%q}\n", msg))
	return &http.Response{StatusCode: code, ProtoMajor: 1, ProtoMinor: 1,
		Header:        http.Header{"Content-Type": {"application/json"}},
		ContentLength: int64(len(b)), Body: io.NopCloser(bytes.NewReader(b))}
}

func writeError(w io.Writer, code int, msg string) {
	resp := errorResponse(code, msg)
	_ = resp.Write(w)
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
