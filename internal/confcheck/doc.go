// Package confcheck is what Tether's configuration parsers share
// (tether.yaml, agent.yaml, appliance.yaml): problems reported as
// "key: value: reason", every one of them rather than the first, and
// YAML decoding through viper that rejects unknown keys.
package confcheck
