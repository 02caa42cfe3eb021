// Package localapi is the plumbing of Tether's local HTTP/JSON APIs over
// Unix sockets (the unit's admin API and the host agent's API): a
// listener whose socket only root and one group may open, a check of the
// peer's credentials on every request (SO_PEERCRED, so a socket whose
// mode was loosened by mistake still refuses strangers), JSON replies
// and errors, and the client side the command-line tools use.
package localapi
