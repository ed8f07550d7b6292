package harness

import (
	"crypto/rand"
	"encoding/binary"
	"time"
)

// crockford is Crockford's base32 alphabet, as used by ULIDs.
const crockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

// NewID returns a new command id in the ULID layout: 26 characters of
// Crockford base32 encoding a 48-bit millisecond timestamp followed by 80
// random bits. Ids from different milliseconds sort by time; ids from the
// same millisecond are unique but in random order.
func NewID() string {
	var b [16]byte
	ms := uint64(time.Now().UnixMilli())
	binary.BigEndian.PutUint16(b[0:2], uint16(ms>>32))
	binary.BigEndian.PutUint32(b[2:6], uint32(ms))
	// crypto/rand.Read never returns an error (it crashes the program
	// if the system's generator fails).
	_, _ = rand.Read(b[6:])
	return encodeULID(b)
}

// encodeULID writes the 128 bits of b as 26 base32 digits, most
// significant first (the first digit holds the top 3 bits).
func encodeULID(b [16]byte) string {
	hi := binary.BigEndian.Uint64(b[0:8])
	lo := binary.BigEndian.Uint64(b[8:16])
	var out [26]byte
	for i := len(out) - 1; i >= 0; i-- {
		out[i] = crockford[lo&31]
		lo = lo>>5 | hi<<59
		hi >>= 5
	}
	return string(out[:])
}
