// Package check runs health checks: a TCP connect, an HTTP GET with an
// expected status, or a command whose exit status says. The host agent
// runs them against its own applications; a unit runs them itself
// against backends that have no agent (the proxy of design S1, FIG. 17A).
//
// A Checker probes every interval and applies rise and fall: health
// changes to healthy after Rise consecutive successes and to failing
// after Fall consecutive failures, so one lost probe does not move
// traffic. The first result is the exception: it sets the health at
// once, because a freshly started agent or unit knows nothing yet, and
// waiting Rise intervals to say "healthy" would only delay service (the
// same reason HAProxy starts servers up and lets fall take them down).
package check
