// Package appliance is what runs as PID 1 of the Tether VM appliance
// (cmd/tether-init): it mounts the kernel's filesystems, loads the
// modules the image carries, finds the configuration (a config disk or
// the kernel command line), brings up networking, starts the unit
// (tetherd run) or a backend's tether-agent and restarts it if it dies,
// relays the admin API to the host over a virtio-serial port, keeps a
// shell on the serial console, and powers off cleanly.
//
// It never gives up on bad input: a missing config disk or a bad
// configuration is said on the console in one line naming the file, the
// key and the reason, and the admin API still comes up (tetherd's rescue
// mode) so that the configuration can be fixed with tetherctl.
package appliance
