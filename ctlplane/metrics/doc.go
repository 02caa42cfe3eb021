// Package metrics exposes the unit's counters in the Prometheus text
// format on an optional TCP listener (admin.metrics; off by default).
// Values are read from the forwarder on each scrape.
package metrics
