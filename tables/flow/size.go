package flow

import "unsafe"

// SlotBytes4 and SlotBytes6 are the sizes of one table slot. A shard
// holds 1.25 slots per entry of its bound.
const (
	SlotBytes4 = int(unsafe.Sizeof(slot4{}))
	SlotBytes6 = int(unsafe.Sizeof(slot6{}))
)
