// Package mtlstest issues the certificates of the host streams' tests:
// a CA in a test's directory, a unit's certificate and a host's, as
// `tetherd certs` issues them, and the mutual TLS configurations made
// of them.
package mtlstest
