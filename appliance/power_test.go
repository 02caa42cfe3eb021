package appliance

import (
	"bytes"
	"encoding/binary"
	"io"
	"testing"
)

func inputEvent(typ, code uint16, value int32) []byte {
	ev := make([]byte, inputEventSize)
	binary.NativeEndian.PutUint16(ev[16:], typ)
	binary.NativeEndian.PutUint16(ev[18:], code)
	binary.NativeEndian.PutUint32(ev[20:], uint32(value))
	return ev
}

func TestReadPowerKey(t *testing.T) {
	var stream bytes.Buffer
	stream.Write(inputEvent(0, 0, 0))                 // EV_SYN
	stream.Write(inputEvent(evKey, 30, 1))            // another key
	stream.Write(inputEvent(evKey, keyPower, 1))      // press
	stream.Write(inputEvent(evKey, keyPower, 0))      // release
	stream.Write(inputEvent(evKey, keyPower, 2))      // auto-repeat
	stream.Write(inputEvent(evKey, keyPower, 1)[:10]) // cut short
	presses := 0
	err := readPowerKey(&stream, func() { presses++ })
	if presses != 1 {
		t.Errorf("%d presses seen, want 1", presses)
	}
	if err != io.ErrUnexpectedEOF {
		t.Errorf("a cut event: %v, want unexpected EOF", err)
	}
}
