// Package unit is the contract between Tether's processes: the control
// process, the forwarder, the admin API and its clients (tetherctl, the
// appliance's init, the demo).
//
// It holds the names of the forwarder's calls and the request and reply
// of each, the admin API's replies, the key that names a backend, and
// the enums every side shares: a VIP's forwarding mode, a backend's
// state, and the flow-table flags a flow event carries. Nothing here
// runs: the package is types, their text forms and their checks, so a
// tool that only talks to a unit links this package and not the
// dataplane.
//
// The package stands on the ground floor (docs/architecture.md,
// "Floors"): it imports nothing of Tether's, and every other package
// may import it.
package unit
