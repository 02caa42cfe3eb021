// Package admin is the unit's admin API: HTTP and JSON on a Unix socket
// (by default /run/tether/admin.sock) that tetherctl talks to. The socket's
// directory is created 0750 and the socket 0600 (0660 with an admin
// group); every connection's peer credentials (SO_PEERCRED) are checked,
// and only root or members of the admin group are served. Errors are JSON
// objects whose message says what to do.
//
// PUT /v1/config replaces the unit's configuration file and reloads it.
// Rescue (rescue.go) is the small version of the API that tetherd run
// --rescue serves when the file is missing or invalid, so that a unit can
// be given a configuration through the socket alone.
package admin
