package rollout

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/mqagent/mqagent/pkg/protocol"
)

// Store keeps rollout states as JSON files (ID.json, mode 0600) in a
// directory.
type Store struct{ Dir string }

// DefaultStore is the per-user store: os.UserCacheDir()/mqagent/rollouts
// (~/.cache/mqagent/rollouts on Linux).
func DefaultStore() (Store, error) {
	d, err := os.UserCacheDir()
	if err != nil {
		return Store{}, fmt.Errorf("rollout store: %w", err)
	}
	return Store{Dir: filepath.Join(d, "mqagent", "rollouts")}, nil
}

// ErrNotFound is returned by Load for an unknown rollout id.
var ErrNotFound = errors.New("no such rollout")

func (s Store) path(id string) (string, error) {
	if !protocol.ValidID(id) || strings.HasPrefix(id, ".") {
		return "", fmt.Errorf("rollout id %q: not a valid id", id)
	}
	return filepath.Join(s.Dir, id+".json"), nil
}

// Save writes st atomically (a temporary file renamed over the old one).
func (s Store) Save(st *State) error {
	p, err := s.path(st.ID)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(s.Dir, 0o700); err != nil {
		return fmt.Errorf("rollout store: %w", err)
	}
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(s.Dir, "."+st.ID+".*.tmp")
	if err != nil {
		return fmt.Errorf("rollout store: %w", err)
	}
	defer os.Remove(tmp.Name()) // after a successful rename: nothing to remove
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("rollout store: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("rollout store: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("rollout store: %w", err)
	}
	if err := os.Rename(tmp.Name(), p); err != nil {
		return fmt.Errorf("rollout store: %w", err)
	}
	return nil
}

// Load reads a saved rollout.
func (s Store) Load(id string) (*State, error) {
	p, err := s.path(id)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("rollout %s: %w (looked in %s)", id, ErrNotFound, s.Dir)
	}
	if err != nil {
		return nil, fmt.Errorf("rollout %s: %w", id, err)
	}
	var st State
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("rollout %s: %s: %w", id, p, err)
	}
	if st.ID != id {
		return nil, fmt.Errorf("rollout %s: %s holds rollout %q", id, p, st.ID)
	}
	if _, err := NewEngine(&st); err != nil {
		return nil, fmt.Errorf("rollout %s: %w", id, err)
	}
	return &st, nil
}

// List returns the ids of the saved rollouts, oldest first (ids are
// ULIDs, which sort by time).
func (s Store) List() ([]string, error) {
	ents, err := os.ReadDir(s.Dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("rollout store: %w", err)
	}
	var ids []string
	for _, e := range ents {
		if id, ok := strings.CutSuffix(e.Name(), ".json"); ok && !strings.HasPrefix(id, ".") {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	return ids, nil
}
