package main

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/tetherlb/tether/internal/mtls"
)

// certsCommand makes a test CA and the host streams' certificates. It
// lives in tetherd, not tetherctl: tetherctl is a thin client of a
// running unit's admin API that links only the contract, while making
// certificates needs no unit and is part of setting one up, beside
// `tetherd run`; the agent hosts need only the files it writes.
func certsCommand() *cobra.Command {
	var dir, caName string
	var units, hosts []string
	cmd := &cobra.Command{
		Use:   "certs --dir DIR [--unit NAME[=ADDR,...]]... [--host ID[=ADDR,...]]...",
		Short: "Make a test CA and certificates for the host streams",
		Long: `Make the mutual-TLS files of the host streams in DIR: a CA (ca.crt and
ca.key, made once and reused), a server certificate for each unit
(unit-NAME.crt, .key: NAME as a DNS name, which agents check against
streams.units[].name, and any addresses as IP names) and a client
certificate for each host (host-ID.crt, .key: the URI tether://host/ID,
which the unit takes as the host's identity, and any addresses as IP
names: the host's tunnel addresses, the only ones whose tunnel flows a
unit tells it about). Existing unit and host
files are replaced. Keys are written mode 0600.

This is a test CA for demos and labs; in production, issue the same
names from the operator's own CA.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dir == "" {
				return errors.New("--dir is required")
			}
			ca, made, err := mtls.OpenCA(dir, caName)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if made {
				fmt.Fprintf(out, "made CA %s/%s\n", dir, mtls.CAFile)
			}
			for _, u := range units {
				name, addrList, _ := strings.Cut(u, "=")
				addrs, err := parseAddrs(addrList)
				if err != nil {
					return fmt.Errorf("--unit %q: %w", u, err)
				}
				if name == "" {
					return fmt.Errorf("--unit %q: no name", u)
				}
				f, err := ca.IssueUnit(dir, name, addrs)
				if err != nil {
					return err
				}
				fmt.Fprintf(out, "unit %s: %s %s\n", name, f.Cert, f.Key)
			}
			for _, h := range hosts {
				idText, addrList, _ := strings.Cut(h, "=")
				id, err := strconv.ParseUint(idText, 10, 32)
				if err != nil || id == 0 {
					return fmt.Errorf("--host %q: want a host ID, 1 to 4294967295", h)
				}
				addrs, err := parseAddrs(addrList)
				if err != nil {
					return fmt.Errorf("--host %q: %w", h, err)
				}
				f, err := ca.IssueHost(dir, uint32(id), addrs...)
				if err != nil {
					return err
				}
				fmt.Fprintf(out, "host %d: %s %s\n", id, f.Cert, f.Key)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "directory for the CA and certificates")
	cmd.Flags().StringVar(&caName, "ca-name", "Tether test CA", "a new CA's name")
	cmd.Flags().StringArrayVar(&units, "unit", nil, "a unit's name, optionally =ADDR,... for IP names (repeatable)")
	cmd.Flags().StringArrayVar(&hosts, "host", nil, "a host ID, optionally =ADDR,... for its tunnel addresses (repeatable)")
	return cmd
}

// parseAddrs parses a comma-separated list of IP addresses ("" is none).
func parseAddrs(list string) ([]netip.Addr, error) {
	var addrs []netip.Addr
	for _, a := range strings.Split(list, ",") {
		if a == "" {
			continue
		}
		ip, err := netip.ParseAddr(a)
		if err != nil {
			return nil, fmt.Errorf("%q is not an IP address", a)
		}
		addrs = append(addrs, ip)
	}
	return addrs, nil
}
