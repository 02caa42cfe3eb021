// Package bgp announces a unit's VIPs to routers over BGP (DESIGN.md §4
// cluster: "VIP announcement to routers over BGP, GoBGP as a library;
// withdraw on drain or failure").
//
// A Speaker runs GoBGP in the control process. It dials each configured
// router (it never listens), authenticates the session with the
// router's TCP MD5 key (RFC 2385), and announces exactly the set of
// host routes it is given (SetAnnounced): a /32 to IPv4 routers, a /128
// to IPv6 ones, with the unit's address on that session as next hop. A
// backup route carries the unit's AS twice more in its AS path, so that
// a router takes it only while no unit announces the address plainly.
// What to announce is the caller's decision (ctlplane/control: VIP
// addresses that can be served, nat VIPs' SNAT addresses, other units'
// SNAT addresses as backups).
//
// It takes nothing from the routers: every route they send is refused
// on import, so the unit never routes by BGP nor passes one router's
// routes to another.
//
// # Withdrawal
//
// A route leaves the routers when SetAnnounced drops it (an UPDATE
// withdraws it at once), when the control process stops (Stop withdraws
// everything, then closes each session with a Cease NOTIFICATION), when
// it dies (the kernel closes its TCP sessions, and a router drops a
// closed session's routes), and when the unit's machine or link dies
// (the router's hold timer: bgp.hold_time, default 9 s).
package bgp
