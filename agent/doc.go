// Package agent is tether-agent, the host agent of design S1: it owns
// the authoritative health-and-load table of the applications on its
// host (one row per application: identity, health, load, capacity,
// target and current directive), fills it from configuration, from local
// probes (internal/probe) and from applications and operators through a
// local API, and keeps every Tether unit's cache in step with it through
// the seven-message protocol (api/healthpb): row changes pushed as they
// happen, heartbeats carrying chunk checksums, snapshots on request, the
// postulate handshake that confirms a directive, and a goodbye on a clean
// shutdown, every datagram signed with this host's own key and numbered
// so that units refuse replays. Hosts of a group may aggregate their
// heartbeats through an elected leader, which relays its members'
// signed frames without being able to change them (group.go).
package agent
