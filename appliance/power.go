package appliance

import (
	"encoding/binary"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// The ACPI power button (virsh shutdown, qemu's system_powerdown) reaches
// user space only as a key press on the input device the button driver
// registers; with no acpid in the image, init listens for it itself.
const (
	evKey    = 1   // EV_KEY
	keyPower = 116 // KEY_POWER
	// inputEventSize is struct input_event on 64-bit Linux: a timeval,
	// type and code (16 bits each) and a 32-bit value.
	inputEventSize = 24
)

// powerButtons returns the event devices named "Power Button".
func powerButtons() []string {
	names, _ := filepath.Glob("/sys/class/input/event*/device/name")
	var devs []string
	for _, n := range names {
		b, err := os.ReadFile(n)
		if err == nil && strings.TrimSpace(string(b)) == "Power Button" {
			devs = append(devs, "/dev/input/"+filepath.Base(filepath.Dir(filepath.Dir(n))))
		}
	}
	return devs
}

// watchPowerButton calls pressed when the power button on dev is
// pressed, and returns when dev cannot be read any more.
func watchPowerButton(dev string, pressed func()) error {
	f, err := os.Open(dev)
	if err != nil {
		return err
	}
	defer f.Close()
	return readPowerKey(f, pressed)
}

// readPowerKey reads input events from r until it fails, calling pressed
// for every press (not release) of KEY_POWER.
func readPowerKey(r io.Reader, pressed func()) error {
	ev := make([]byte, inputEventSize)
	for {
		if _, err := io.ReadFull(r, ev); err != nil {
			return err
		}
		typ := binary.NativeEndian.Uint16(ev[16:])
		code := binary.NativeEndian.Uint16(ev[18:])
		value := int32(binary.NativeEndian.Uint32(ev[20:]))
		if typ == evKey && code == keyPower && value == 1 {
			pressed()
		}
	}
}
