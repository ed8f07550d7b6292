// Package rollout runs one command over many hosts safely: a canary batch
// first, then a rolling window of at most N (or P%) hosts at a time, at a
// rate of at most N starts per minute that may grow exponentially as hosts
// succeed, and an abort when the share of failures passes a threshold once
// enough hosts have answered (no more hosts are started; the report says
// what ran where). Its state is saved to a file after every change, so an
// interrupted or aborted rollout can be resumed.
//
// The scheduling is pure logic (Engine: no goroutines, no clock of its
// own); Execute drives an Engine through a Backend, which sends the
// command and waits for results. ClientBackend is the Backend over
// pkg/client; tests use a simulated one with a virtual clock.
package rollout

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Size is a number of hosts or a percentage of the rollout's hosts.
type Size struct {
	N       int
	Percent float64 // used when N is 0
}

// ParseSize reads "N" or "P%" (0 < P <= 100). "" is the zero Size.
func ParseSize(s string) (Size, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return Size{}, nil
	}
	if p, ok := strings.CutSuffix(s, "%"); ok {
		v, err := strconv.ParseFloat(p, 64)
		if err != nil || !(v > 0 && v <= 100) {
			return Size{}, fmt.Errorf("%q: a percentage must be in (0, 100]", s)
		}
		return Size{Percent: v}, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		return Size{}, fmt.Errorf("%q: want a number of hosts (1 or more) or a percentage (10%%)", s)
	}
	return Size{N: n}, nil
}

// Of is the size for total hosts: N, or P% of total rounded up, at least 1;
// 0 when the size is zero (unset).
func (s Size) Of(total int) int {
	if s.N > 0 {
		return s.N
	}
	if s.Percent <= 0 {
		return 0
	}
	return max(1, int(math.Ceil(s.Percent*float64(total)/100-1e-9)))
}

// IsZero reports whether the size is unset.
func (s Size) IsZero() bool { return s.N == 0 && s.Percent == 0 }

// String is the size in ParseSize's syntax ("" when unset).
func (s Size) String() string {
	switch {
	case s.N > 0:
		return strconv.Itoa(s.N)
	case s.Percent > 0:
		return strconv.FormatFloat(s.Percent, 'f', -1, 64) + "%"
	}
	return ""
}

// MarshalText implements encoding.TextMarshaler.
func (s Size) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (s *Size) UnmarshalText(b []byte) error {
	v, err := ParseSize(string(b))
	if err != nil {
		return err
	}
	*s = v
	return nil
}

// ParseRate reads a start rate: "N/min", "N/s", "N/h" or "N" (per
// minute); N may be fractional. It returns starts per minute; "" is 0
// (unlimited).
func ParseRate(s string) (float64, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, nil
	}
	num, unit, _ := strings.Cut(s, "/")
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || !(v > 0) || math.IsInf(v, 0) {
		return 0, fmt.Errorf("rate %q: want N/min, N/s or N/h with N > 0", s)
	}
	switch unit {
	case "", "m", "min", "minute":
		return v, nil
	case "s", "sec", "second":
		return v * 60, nil
	case "h", "hour":
		return v / 60, nil
	}
	return 0, fmt.Errorf("rate %q: unknown unit %q (min, s, h)", s, unit)
}

// Config are the rollout's rules. The zero Config starts every host at
// once and never aborts.
type Config struct {
	// Canary hosts are started first, alone; the rollout goes on only when
	// every one of them succeeded.
	Canary int `json:"canary,omitempty"`
	// Batch is the rolling window: at most this many hosts have the
	// command running at once; when one finishes the next starts. Zero:
	// no limit.
	Batch Size `json:"batch,omitzero"`
	// Rate is the maximum number of starts per minute (0: no limit).
	Rate float64 `json:"rate_per_min,omitempty"`
	// RateFactor > 1 multiplies Rate by itself after every RateEvery
	// successes (exponential growth, as AWS IoT Jobs' exponentialRate),
	// up to MaxRate when set.
	RateFactor float64 `json:"rate_factor,omitempty"`
	RateEvery  int     `json:"rate_every,omitempty"`
	MaxRate    float64 `json:"max_rate_per_min,omitempty"`
	// AbortPercent > 0 aborts the rollout when failed hosts (timed out
	// and not answering included) reach this share of the finished ones,
	// once at least AbortMin (default 1) have finished.
	AbortPercent float64 `json:"abort_percent,omitempty"`
	AbortMin     int     `json:"abort_min,omitempty"`
	// HostTimeout is how long a host has, from its start, to send a final
	// result before it counts as not answering. Required.
	HostTimeout time.Duration `json:"host_timeout"`
}

// Validate checks the config.
func (c Config) Validate() error {
	var errs []error
	if c.Canary < 0 {
		errs = append(errs, errors.New("canary: must not be negative"))
	}
	if c.Rate < 0 || c.MaxRate < 0 {
		errs = append(errs, errors.New("rate: must not be negative"))
	}
	if c.RateFactor != 0 && (c.RateFactor < 1 || c.Rate == 0) {
		errs = append(errs, errors.New("rate factor: must be at least 1, with a rate"))
	}
	if c.RateFactor > 1 && c.RateEvery < 1 {
		errs = append(errs, errors.New("rate every: how many successes between rate increases (1 or more)"))
	}
	if c.AbortPercent < 0 || c.AbortPercent > 100 {
		errs = append(errs, errors.New("abort percent: must be in [0, 100]"))
	}
	if c.AbortMin < 0 {
		errs = append(errs, errors.New("abort min: must not be negative"))
	}
	if c.HostTimeout <= 0 {
		errs = append(errs, errors.New("host timeout: required"))
	}
	return errors.Join(errs...)
}
