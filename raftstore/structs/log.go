package structs

import (
	"encoding/json"
	"fmt"
)

// MessageType is the first byte of every Raft log entry: it says how to decode
// the rest and which FSM handler applies it. Values are persisted: only ever
// add new ones, with explicit numbers.
type MessageType uint8

// Log entry types. Append only.
const (
	RegisterRequestType   MessageType = 0
	DeregisterRequestType MessageType = 1
	// BatchRequestType carries several catalog writes applied at one index
	// in one transaction (a JSON list of state.Op).
	BatchRequestType MessageType = 2
	// CARequestType sets the CA configuration and roots (a CAWrite).
	CARequestType MessageType = 3
	// IntentionRequestType writes or deletes an intention (an IntentionWrite).
	IntentionRequestType MessageType = 4
	// LeafRequestType records issued leaves (a LeafWrite).
	LeafRequestType MessageType = 5
	// ConfigEntryRequestType writes or deletes a config entry (a
	// ConfigEntryRequest, validated by the leader).
	ConfigEntryRequestType MessageType = 6
)

// IgnoreUnknownTypeFlag, set on a MessageType, lets an older server skip an
// entry type it does not know instead of stopping (for optional data).
const IgnoreUnknownTypeFlag MessageType = 128

func (t MessageType) String() string {
	switch t &^ IgnoreUnknownTypeFlag {
	case RegisterRequestType:
		return "Register"
	case DeregisterRequestType:
		return "Deregister"
	case BatchRequestType:
		return "Batch"
	case CARequestType:
		return "CA"
	case IntentionRequestType:
		return "Intention"
	case LeafRequestType:
		return "Leaf"
	case ConfigEntryRequestType:
		return "ConfigEntry"
	}
	return fmt.Sprintf("MessageType(%d)", uint8(t))
}

// Encode returns a log entry: the type byte followed by msg as JSON.
func Encode(t MessageType, msg any) ([]byte, error) {
	body, err := json.Marshal(msg)
	if err != nil {
		return nil, fmt.Errorf("encode %s entry: %w", t, err)
	}
	buf := make([]byte, 0, len(body)+1)
	buf = append(buf, byte(t))
	return append(buf, body...), nil
}

// Decode decodes the body of a log entry (without its type byte) into out.
func Decode(body []byte, out any) error {
	return json.Unmarshal(body, out)
}
