package healthpb

import "github.com/tetherlb/tether/api/unit"

// Names of health values and directives as configurations, APIs and
// tools spell them.

// StateName is "active", "draining" or "inactive" (unspecified reads as
// active, the state nothing has restricted).
func StateName(s State) string {
	switch s {
	case State_STATE_DRAINING:
		return "draining"
	case State_STATE_INACTIVE:
		return "inactive"
	}
	return "active"
}

// ParseState reads a StateName.
func ParseState(s string) (State, bool) {
	switch s {
	case "active":
		return State_STATE_ACTIVE, true
	case "draining":
		return State_STATE_DRAINING, true
	case "inactive":
		return State_STATE_INACTIVE, true
	}
	return State_STATE_UNSPECIFIED, false
}

// HealthName is "healthy", "failing" or "unknown".
func HealthName(h Health) string {
	switch h {
	case Health_HEALTH_HEALTHY:
		return "healthy"
	case Health_HEALTH_FAILING:
		return "failing"
	}
	return "unknown"
}

// ParseHealth reads a HealthName.
func ParseHealth(s string) (Health, bool) {
	switch s {
	case "healthy":
		return Health_HEALTH_HEALTHY, true
	case "failing":
		return Health_HEALTH_FAILING, true
	case "unknown":
		return Health_HEALTH_UNKNOWN, true
	}
	return Health_HEALTH_UNKNOWN, false
}

// View is a row as the admin API and the agent's API show it.
func View(r *Row) unit.RowView {
	a := r.GetApp()
	return unit.RowView{Proto: a.GetProto(), VIP: a.GetVip(), Endpoint: a.GetEndpoint(), URL: a.GetUrl(),
		Health: HealthName(r.GetHealth()), Load: r.GetLoad(), Capacity: r.GetCapacity(),
		Target: StateName(r.GetTarget()), Current: StateName(r.GetCurrent())}
}
