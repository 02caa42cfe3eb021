// Package health is a unit's end of the health-and-load protocol (design
// S1 §6-§9): the consolidated cache of every host's table, indexed by
// host and by application type (cache.go); the server that receives the
// seven messages, takes only those a host sent for itself (its own key,
// its own endpoints, fresh, not replayed), checks each host's copy
// against its heartbeats, asks
// for snapshots when they differ, answers postulates and ages out
// silent hosts (server.go); the unit's own probes for backends without
// an agent (probes.go); and the verdict that turns the cache into backend
// states, Maglev weights and token allotments (evaluate.go, allot.go).
package health
