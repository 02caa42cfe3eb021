package main

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"github.com/spf13/cobra"

	pb "github.com/tetherlb/tether/api/healthpb"
)

// healthKeyCommand derives a host's key for the health protocol from the
// units' master secret: the operator runs it once per host and copies
// the file to that host's auth.key_file. The key speaks for that host ID
// and the endpoints granted, nothing else.
func healthKeyCommand() *cobra.Command {
	var master, endpoints, out string
	var host uint32
	var create bool
	cmd := &cobra.Command{
		Use:   "health-key",
		Short: "Derive a host's health-protocol key from the units' master secret",
		Long: `Derive a host's health-protocol key from the units' master secret
(health.auth.master_key_file) for one host ID and the address prefixes
whose endpoints it may report on. Units need only the master secret;
the host holds only its own key.`,
		Example: `  tetherd health-key --master /etc/tether/health.master --host 11 --endpoints 10.0.10.2 --out agent-11.key`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if create {
				if err := createMaster(master); err != nil {
					return err
				}
			}
			b, err := os.ReadFile(master)
			if err != nil {
				return fmt.Errorf("--master: %w", err)
			}
			g, err := pb.ParseGrant(endpoints)
			if err != nil {
				return fmt.Errorf("--endpoints: %q: %w", endpoints, err)
			}
			k, err := pb.NewHostKey([]byte(strings.TrimSpace(string(b))), host, g)
			if err != nil {
				return fmt.Errorf("--master %q, --host %d: %w", master, host, err)
			}
			text, _ := k.MarshalText()
			if out == "" || out == "-" {
				_, err = cmd.OutOrStdout().Write(text)
				return err
			}
			if err := os.WriteFile(out, text, 0o600); err != nil {
				return fmt.Errorf("--out: %w", err)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&master, "master", "/etc/tether/health.master", "the units' master secret (health.auth.master_key_file)")
	f.Uint32Var(&host, "host", 0, "the host's ID (its agent's host.id)")
	f.StringVar(&endpoints, "endpoints", "", "prefixes whose endpoints the host may report on, comma-separated (10.0.10.2, 10.0.10.0/24)")
	f.StringVar(&out, "out", "", "write the key here (mode 0600); default: standard output")
	f.BoolVar(&create, "create-master", false, "first make the master secret (32 random bytes, mode 0600) if the file does not exist")
	cmd.MarkFlagRequired("host")
	cmd.MarkFlagRequired("endpoints")
	return cmd
}

// createMaster writes a new random master secret to path unless a file
// is there already (never overwrite: every host key depends on it).
func createMaster(path string) error {
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return fmt.Errorf("--create-master: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("--create-master: %w", err)
	}
	_, err = fmt.Fprintln(f, base64.StdEncoding.EncodeToString(secret))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("--create-master: %w", err)
	}
	return nil
}
