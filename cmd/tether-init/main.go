// Command tether-init is PID 1 of the Tether VM appliance: see package
// appliance and docs/appliance.md. It is not useful anywhere else.
package main

import (
	"fmt"
	"os"

	"github.com/tetherlb/tether/appliance"
)

func main() {
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "tether-init: runs only as PID 1 of the Tether appliance (see docs/appliance.md)")
		os.Exit(2)
	}
	appliance.New(os.Stdout).Run()
}
