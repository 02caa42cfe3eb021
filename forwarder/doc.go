// Package forwarder runs the dataplane on a real port: it opens the port
// the configuration names, sends the traffic Tether owns into it, starts
// one pinned worker per configured core, applies configuration reloads
// between batches, and reports what the workers did.
package forwarder
