// Package mtls is the mutual TLS of the host stream: TLS 1.3 server and
// client configurations from an operator's CA, certificate and key files;
// the host identity a client certificate carries (a URI SAN
// tether://host/ID); and a test CA with unit and host certificates
// (`tetherd certs`), so demos and tests need no manual step.
package mtls
