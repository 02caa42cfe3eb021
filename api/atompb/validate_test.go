package atompb

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
)

func atom(key string) *Atom {
	return &Atom{Key: key, Host: "10.1.0.1", Data: []byte{1}, Adder: "unit-a", AdderBoot: 9, Stamp: 100, TimeoutMs: 60000}
}

func req(body isRequest_Body) *Request { return &Request{Version: Version, Body: body} }

// requestSamples are valid requests of every kind.
func requestSamples() map[string]*Request {
	return map[string]*Request{
		"hello":  req(&Request_Hello{Hello: &Hello{Unit: "unit-a", Boot: 7}}),
		"add":    req(&Request_Add{Add: &Add{Seq: 1, Atoms: []*Atom{atom("route/tcp/10.0.0.1:1>192.0.2.1:80"), atom("session/ip/10.0.0.2")}}}),
		"delete": req(&Request_Delete{Delete: &Delete{Seq: 2, Atoms: []*Atom{{Key: "route/x", Adder: "unit-a", Stamp: 3}}}}),
		"query":  req(&Request_Query{Query: &Query{Id: 4, Keys: []string{"route/x", "session/app/vip/abc"}}}),
		"pull":   req(&Request_Pull{Pull: &Pull{Id: 5}}),
	}
}

func replySamples() map[string]*Reply {
	return map[string]*Reply{
		"ack":    {Version: Version, Body: &Reply_Ack{Ack: &Ack{Seq: 1}}},
		"return": {Version: Version, Body: &Reply_Return{Return: &Return{Id: 4, Atoms: []*Atom{atom("route/x")}, Last: true}}},
		"empty":  {Version: Version, Body: &Reply_Return{Return: &Return{Id: 5, Last: true}}},
	}
}

func TestValidSamples(t *testing.T) {
	for name, m := range requestSamples() {
		if err := ValidateRequest(m); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	for name, m := range replySamples() {
		if err := ValidateReply(m); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// TestInvalid: each broken message is refused with ErrInvalid (or
// ErrVersion) and says what is wrong.
func TestInvalid(t *testing.T) {
	long := strings.Repeat("x", MaxKey)
	bad := func(mut func(a *Atom)) *Request {
		a := atom("route/k")
		mut(a)
		return req(&Request_Add{Add: &Add{Atoms: []*Atom{a}}})
	}
	many := make([]*Atom, MaxBatch+1)
	for i := range many {
		many[i] = atom("route/k")
	}
	cases := map[string]struct {
		m    *Request
		want string
	}{
		"version":      {&Request{Version: 2, Body: &Request_Pull{Pull: &Pull{}}}, "version"},
		"no body":      {&Request{Version: Version}, "without a body"},
		"hello name":   {req(&Request_Hello{Hello: &Hello{Unit: "", Boot: 1}}), "unit name"},
		"hello ctl":    {req(&Request_Hello{Hello: &Hello{Unit: "a\nb", Boot: 1}}), "unit name"},
		"hello boot":   {req(&Request_Hello{Hello: &Hello{Unit: "a", Boot: 0}}), "boot"},
		"key kind":     {bad(func(a *Atom) { a.Key = "other/x" }), "want"},
		"key long":     {bad(func(a *Atom) { a.Key = "route/" + long }), "over"},
		"key utf8":     {bad(func(a *Atom) { a.Key = "route/\xff" }), "printable"},
		"host":         {bad(func(a *Atom) { a.Host = "" }), "host"},
		"data":         {bad(func(a *Atom) { a.Data = make([]byte, MaxData+1) }), "data"},
		"stamp":        {bad(func(a *Atom) { a.Stamp = 0 }), "stamp"},
		"adder":        {bad(func(a *Atom) { a.Adder = "" }), "adder"},
		"adder boot":   {bad(func(a *Atom) { a.AdderBoot = 0 }), "adder boot"},
		"timeout":      {bad(func(a *Atom) { a.TimeoutMs = 0 }), "timeout"},
		"timeout long": {bad(func(a *Atom) { a.TimeoutMs = MaxTimeout + 1 }), "timeout"},
		"nil atom":     {req(&Request_Add{Add: &Add{Atoms: []*Atom{nil}}}), "empty"},
		"batch":        {req(&Request_Add{Add: &Add{Atoms: many}}), "atoms, over"},
		"query empty":  {req(&Request_Query{Query: &Query{}}), "0 keys"},
		"query key":    {req(&Request_Query{Query: &Query{Keys: []string{"x"}}}), "want"},
		"nil add":      {req(&Request_Add{}), "add: empty"},
	}
	for name, c := range cases {
		err := ValidateRequest(c.m)
		if err == nil || !(errors.Is(err, ErrInvalid) || errors.Is(err, ErrVersion)) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error about %q", name, err, c.want)
		}
	}
	if err := ValidateReply(&Reply{Version: Version, Body: &Reply_Return{Return: &Return{Atoms: []*Atom{{Key: "route/x"}}}}}); err == nil {
		t.Error("a return with a partial atom was accepted")
	}
}

// FuzzRequest: whatever the bytes, decoding and validation never
// panic, and a valid request survives re-encoding.
func FuzzRequest(f *testing.F) {
	for _, m := range requestSamples() {
		b, _ := proto.Marshal(m)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var m Request
		if proto.Unmarshal(b, &m) != nil || ValidateRequest(&m) != nil {
			return
		}
		again, err := proto.Marshal(&m)
		if err != nil {
			t.Fatal(err)
		}
		var m2 Request
		if err := proto.Unmarshal(again, &m2); err != nil || ValidateRequest(&m2) != nil || !proto.Equal(&m, &m2) {
			t.Fatalf("valid message did not survive re-encoding: %v", err)
		}
	})
}

// FuzzReply is FuzzRequest for the answers.
func FuzzReply(f *testing.F) {
	for _, m := range replySamples() {
		b, _ := proto.Marshal(m)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var m Reply
		if proto.Unmarshal(b, &m) != nil || ValidateReply(&m) != nil {
			return
		}
		again, err := proto.Marshal(&m)
		if err != nil {
			t.Fatal(err)
		}
		var m2 Reply
		if err := proto.Unmarshal(again, &m2); err != nil || ValidateReply(&m2) != nil || !proto.Equal(&m, &m2) {
			t.Fatalf("valid message did not survive re-encoding: %v", err)
		}
	})
}

// TestWriteCorpus rewrites testdata/fuzz from the samples when
// ATOMPB_WRITE_CORPUS is set (after a message changes shape).
func TestWriteCorpus(t *testing.T) {
	if os.Getenv("ATOMPB_WRITE_CORPUS") == "" {
		t.Skip("ATOMPB_WRITE_CORPUS not set")
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
	for name, m := range requestSamples() {
		write("FuzzRequest", name, m)
	}
	for name, m := range replySamples() {
		write("FuzzReply", name, m)
	}
}
