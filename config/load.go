package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/viper"

	"github.com/tetherlb/tether/internal/confcheck"
)

// EnvPrefix prefixes environment variables that override scalar keys:
// TETHER_FORWARDER_BATCH=64 sets forwarder.batch.
const EnvPrefix = "TETHER"

// defaults are the values of every scalar key. Registering them with
// viper is also what lets an environment variable override a key the
// file does not mention.
var defaults = map[string]any{
	"unit.name":                                "tether",
	"unit.address4":                            "",
	"unit.address6":                            "",
	"unit.mac":                                 "",
	"forwarder.workers":                        1,
	"forwarder.batch":                          32,
	"forwarder.answer_ping":                    true,
	"forwarder.ttl":                            TTLDecrement,
	"forwarder.flows.max":                      1 << 20,
	"forwarder.flows.timeouts.tcp_syn":         60 * time.Second,
	"forwarder.flows.timeouts.tcp_established": 15 * time.Minute,
	"forwarder.flows.timeouts.tcp_fin":         2 * time.Minute,
	"forwarder.flows.timeouts.tcp_closed":      10 * time.Second,
	"forwarder.flows.timeouts.udp":             5 * time.Minute,
	"forwarder.flows.timeouts.udp_unreplied":   30 * time.Second,
	"forwarder.flows.timeouts.other":           time.Minute,
	"forwarder.fragments.datagrams":            4096,
	"forwarder.fragments.pending":              64,
	"forwarder.fragments.timeout":              5 * time.Second,
	"forwarder.port.driver":                    DriverTUN,
	"forwarder.port.interface":                 "tether0",
	"forwarder.port.queues":                    1,
	"forwarder.port.mtu":                       0,
	"forwarder.port.table":                     DefaultReturnTable,
	"forwarder.port.queue_length":              DefaultQueueLength,
	"forwarder.port.offload":                   true,
	"forwarder.port.pin_dir":                   DefaultPinDir,
	"admin.socket":                             "/run/tether/admin.sock",
	"admin.group":                              "",
	"admin.run_dir":                            "/run/tether",
	"admin.metrics":                            "",
	"l2.gateway_mac":                           "",
	"health.listen":                            "",
	"health.unit_id":                           0,
	"health.key_file":                          "",
	"health.missed":                            4,
	"health.startup_grace":                     3 * time.Second,
	"health.allotment.tokens":                  1000,
	"health.allotment.duration":                10 * time.Second,
	// The host streams (hosts.go).
	"hosts.listen":                "",
	"hosts.tls.ca":                "",
	"hosts.tls.cert":              "",
	"hosts.tls.key":               "",
	"health.auth.master_key_file": "",
	"health.auth.freshness":       30 * time.Second,
}

// LoadFile reads a YAML configuration file, applies TETHER_* environment
// overrides and checks the result.
func LoadFile(path string) (*Config, error) {
	c, _, err := ReadFile(path)
	return c, err
}

// ReadFile is LoadFile that also returns the file's text, read once:
// what a unit runs and what it shows as its configuration are the same
// bytes.
func ReadFile(path string) (*Config, []byte, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("config %s: %w", path, err)
	}
	c, err := Parse(raw)
	if err != nil {
		return nil, nil, fmt.Errorf("config %s: %w", path, err)
	}
	return c, raw, nil
}

// Load reads YAML from r, applies TETHER_* environment overrides and
// checks the result.
func Load(r io.Reader) (*Config, error) {
	v := newViper()
	v.SetConfigType("yaml")
	if err := v.ReadConfig(r); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return decode(v)
}

// Parse is Load from bytes.
func Parse(b []byte) (*Config, error) { return Load(bytes.NewReader(b)) }

func newViper() *viper.Viper { return confcheck.NewViper(defaults, EnvPrefix) }

func decode(v *viper.Viper) (*Config, error) {
	var c Config
	if err := confcheck.Unmarshal(v, &c); err != nil {
		return nil, err
	}
	if err := defaultCores(&c.Forwarder, os.Getenv(WorkerCPUsEnv)); err != nil {
		return nil, err
	}
	if err := c.Check(); err != nil {
		return nil, err
	}
	return &c, nil
}

// WorkerCPUsEnv names the CPUs forwarder workers are pinned to when the
// file pins none (forwarder.cores empty), as a comma-separated list. The
// appliance's init sets it to the vCPUs it keeps free of housekeeping,
// so that workers get CPUs of their own without every tether.yaml naming
// them; forwarder.cores in the file always wins.
const WorkerCPUsEnv = "TETHER_WORKER_CPUS"

// defaultCores pins f's workers to the first of cpus when the file gave
// no cores and there are enough CPUs for one per worker; otherwise the
// workers stay unpinned.
func defaultCores(f *Forwarder, cpus string) error {
	if len(f.Cores) > 0 || strings.TrimSpace(cpus) == "" {
		return nil
	}
	var list []int
	for _, field := range strings.Split(cpus, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(field))
		if err != nil || n < 0 || n > 1023 {
			return fmt.Errorf("%s: %q: want CPU numbers separated by commas, e.g. 1,2,3", WorkerCPUsEnv, cpus)
		}
		list = append(list, n)
	}
	if f.Workers > 0 && len(list) >= f.Workers {
		f.Cores = list[:f.Workers]
	}
	return nil
}

// Encode writes a checked configuration in the form the control process
// sends the forwarder (api/unit.CallReload): JSON of the whole
// structure, environment overrides and run-time overrides already in it.
func Encode(c *Config) ([]byte, error) {
	b, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("config: encode: %w", err)
	}
	return b, nil
}

// Decode reads what Encode wrote and checks it. It never consults the
// environment: the sender applied it once, and two processes applying
// their own would run two configurations. Unknown fields are refused.
func Decode(b []byte) (*Config, error) {
	var c Config
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(&c); err != nil {
		return nil, fmt.Errorf("config: decode: %w", err)
	}
	if d.More() {
		return nil, errors.New("config: decode: trailing data after the configuration")
	}
	if err := c.Check(); err != nil {
		return nil, err
	}
	return &c, nil
}

// Clone returns a deep copy of c, to apply run-time overrides to without
// touching the configuration as read.
func (c *Config) Clone() *Config {
	out := *c
	out.Forwarder.Cores = slices.Clone(c.Forwarder.Cores)
	out.L2.Neighbors = slices.Clone(c.L2.Neighbors)
	out.VIPs = slices.Clone(c.VIPs)
	out.Cluster = c.Cluster.clone()
	out.BGP = c.BGP.clone()
	for i := range out.VIPs {
		v := &out.VIPs[i]
		v.SNAT = slices.Clone(v.SNAT)
		v.snat = slices.Clone(v.snat)
		v.SNATStandby = slices.Clone(v.SNATStandby)
		v.snatStandby = slices.Clone(v.snatStandby)
		v.Backends = slices.Clone(v.Backends)
		v.L7 = v.L7.clone()
		for j := range v.Backends {
			if w := v.Backends[j].Weight; w != nil {
				wc := *w
				v.Backends[j].Weight = &wc
			}
		}
	}
	return &out
}
