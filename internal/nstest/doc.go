// Package nstest is what tests that need real network namespaces share:
// a skip when they cannot run, namespaces that are removed when the test
// ends (or, when go test's -timeout killed the binary first, by the next
// test that makes one), commands that fail the test with their output,
// running code inside a namespace, and a BPF filesystem of the test's
// own.
package nstest
