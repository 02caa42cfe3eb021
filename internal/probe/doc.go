// Package probe runs health probes: a TCP connect, an HTTP GET that must
// answer an expected status, or a command whose exit status decides.
// (Operators call them health checks, and the configuration key is
// "check"; in the code "check" means validating a configuration.)
//
// Two processes run the same probes, which is why they live in a package
// of the ground floor that both import, not in either's room. The host agent checks the applications on its own host and
// reports their health to the units. A Tether unit runs "proxy" checks
// itself against backends that have no agent (the proxy of design S1,
// FIG. 17A), so that such backends still get a health. Either way the
// probe is real: a connection, a request or a process, never a guess
// from traffic.
//
// A Monitor probes every Interval and applies rise and fall: the health
// turns Healthy after Rise consecutive successes and Failing after Fall
// consecutive failures, so one lost probe does not move traffic and one
// lucky probe does not bring it back. A result that agrees with the
// current health resets the opposite streak.
//
// The first result is the exception: it sets the health directly, from
// Unknown to Healthy or Failing. A newly started agent or unit knows
// nothing about its targets, and waiting Rise intervals before saying
// "healthy" (or Fall before saying "failing") would only keep a working
// backend out of service, or a dead one in, for no gain: there is no
// previous state whose stability hysteresis would protect. It is the
// same thing HAProxy does when a server is checked for the first time.
//
// Probes never overlap and always end within their Timeout (plus a short
// grace for an exec probe's output pipes), so a hung target costs one
// probe, not a pile of them. An exec probe runs in its own process group,
// which is killed when the probe ends, so a shell script's children do not
// outlive it.
package probe
