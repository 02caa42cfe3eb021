// Package config is Tether's configuration: the schema of tether.yaml,
// loading it (YAML file, TETHER_* environment overrides) and checking it.
//
// A Config is pure data: it says what the operator wants and holds no
// runtime state. Every error from Load or Check names the key, the value
// and the reason, for example
//
//	vips[0].backends[1].address: "10.0.1.x" is not an IP address
//
// and a configuration that fails any check is rejected whole, so a
// running unit keeps the configuration it has.
package config
