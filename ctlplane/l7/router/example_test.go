package router_test

import (
	"context"
	"log"
	"net"
	"net/http"
	"net/netip"
	"strings"

	"github.com/tetherlb/tether/ctlplane/l7/router"
)

// A router that sends /api to one host and everything else to two
// others, dialing all three from the router's own address.
func Example() {
	api := netip.MustParseAddrPort("10.0.1.10:8080")
	web1 := netip.MustParseAddrPort("10.0.1.20:8080")
	web2 := netip.MustParseAddrPort("10.0.1.21:8080")
	rt, err := router.New(router.Config{
		Decide: func(r *http.Request, avoid func(key string) bool) (router.Target, bool) {
			if strings.HasPrefix(r.URL.Path, "/api/") {
				return router.Target{Addr: api, Key: "shop/api1", Rule: "api"}, true
			}
			// web2 takes what web1 is ejected for, or failed to
			// take; if both are to be avoided, web1 is tried still.
			if avoid("shop/web1") && !avoid("shop/web2") {
				return router.Target{Addr: web2, Key: "shop/web2", Rule: "default"}, true
			}
			return router.Target{Addr: web1, Key: "shop/web1", Rule: "default"}, true
		},
		Source: netip.MustParseAddr("10.0.0.5"),
	})
	if err != nil {
		log.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // an example: stop at once
	if err := rt.Serve(ctx, l); err != nil {
		log.Fatal(err)
	}
	// Output:
}
