package state

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"runtime/debug"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// validateFile checks an existing state file before it is opened for
// writing. It opens the file read-only (a shared lock, so a running agent
// gives ErrLocked), checks with plain reads what bbolt trusts blindly when
// it maps the file (the meta pages, the size, the free-list page), reads
// every reachable page in this goroutine (where a fault on a bad page is a
// recoverable panic) and runs bbolt's consistency check.
func validateFile(path string) (err error) {
	var file *os.File
	var db *bolt.DB
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %s: %v", ErrCorrupt, path, r)
		}
		if db != nil {
			if cerr := db.Close(); cerr != nil && err == nil {
				err = fmt.Errorf("close state file %s: %w", path, cerr)
			}
		} else if file != nil {
			_ = file.Close() // bbolt panicked inside Open
		}
	}()
	db, err = bolt.Open(path, 0o600, &bolt.Options{
		ReadOnly: true,
		Timeout:  lockTimeout,
		OpenFile: func(name string, flag int, perm os.FileMode) (*os.File, error) {
			f, err := os.OpenFile(name, flag, perm)
			file = f
			return f, err
		},
	})
	if err != nil {
		return boltOpenErr(path, err)
	}
	if err := preflight(file); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrCorrupt, path, err)
	}
	return db.View(func(tx *bolt.Tx) error {
		var sum byte
		err := tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			return walk(b, &sum)
		})
		if err != nil {
			return fmt.Errorf("%w: %s: %w", ErrCorrupt, path, err)
		}
		var errs []error
		for cerr := range tx.Check() {
			if len(errs) < 5 {
				errs = append(errs, cerr)
			}
		}
		if len(errs) > 0 {
			return fmt.Errorf("%w: %s: %w", ErrCorrupt, path, errors.Join(errs...))
		}
		return nil
	})
}

// boltOpenErr maps an error of bolt.Open.
func boltOpenErr(path string, err error) error {
	switch {
	case errors.Is(err, berrors.ErrTimeout):
		return fmt.Errorf("%w: %s", ErrLocked, path)
	case errors.Is(err, berrors.ErrInvalid), errors.Is(err, berrors.ErrVersionMismatch),
		errors.Is(err, berrors.ErrChecksum), errors.Is(err, berrors.ErrInvalidMapping),
		isTooSmall(err):
		return fmt.Errorf("%w: %s: %w", ErrCorrupt, path, err)
	default:
		return fmt.Errorf("open state file %s: %w", path, err)
	}
}

// walk reads every key and value of b and its nested buckets.
func walk(b *bolt.Bucket, sum *byte) error {
	c := b.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if v == nil {
			nb := b.Bucket(k)
			if nb == nil {
				return fmt.Errorf("bucket key %x has no value", k)
			}
			if err := walk(nb, sum); err != nil {
				return err
			}
			continue
		}
		*sum += k[0]
		if len(v) > 0 {
			*sum += v[0] + v[len(v)-1]
		}
	}
	return nil
}

// bbolt's on-disk format (version 2), in native byte order: a page starts
// with a 16-byte header (id u64, flags u16, count u16, overflow u32); a
// meta page holds after it magic u32, version u32, pageSize u32, flags u32,
// root pgid u64, root sequence u64, freelist pgid u64, high-water pgid u64,
// txid u64, and an FNV-64a checksum of the preceding 56 bytes.
const (
	pageHeaderSize   = 16
	metaSize         = 64
	metaMagic        = 0xED0CDAED
	metaVersion      = 2
	freelistPageFlag = 0x10
	noFreelist       = ^uint64(0)
)

type metaPage struct {
	pageSize             uint64
	root, freelist, pgid uint64
	txid                 uint64
}

// readMeta reads and validates the meta page at off.
func readMeta(f io.ReaderAt, off int64) (metaPage, bool) {
	buf := make([]byte, pageHeaderSize+metaSize)
	if _, err := f.ReadAt(buf, off); err != nil {
		return metaPage{}, false
	}
	m := buf[pageHeaderSize:]
	ne := binary.NativeEndian
	h := fnv.New64a()
	_, _ = h.Write(m[:56])
	if ne.Uint32(m[0:]) != metaMagic || ne.Uint32(m[4:]) != metaVersion || ne.Uint64(m[56:]) != h.Sum64() {
		return metaPage{}, false
	}
	return metaPage{
		pageSize: uint64(ne.Uint32(m[8:])),
		root:     ne.Uint64(m[16:]),
		freelist: ne.Uint64(m[32:]),
		pgid:     ne.Uint64(m[40:]),
		txid:     ne.Uint64(m[48:]),
	}, true
}

// preflight checks the parts of the file that bbolt reads without bounds
// checks when it opens it for writing.
func preflight(f *os.File) error {
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	size := uint64(fi.Size())
	// The same choice as bbolt: the valid meta page with the highest txid.
	m0, ok0 := readMeta(f, 0)
	var m1 metaPage
	ok1 := false
	if ok0 {
		m1, ok1 = readMeta(f, int64(m0.pageSize))
	} else {
		for ps := int64(1024); ps <= 1<<16 && !ok1; ps *= 2 {
			m1, ok1 = readMeta(f, ps)
			ok1 = ok1 && m1.pageSize == uint64(ps)
		}
	}
	var m metaPage
	switch {
	case ok0 && ok1 && m1.txid > m0.txid, !ok0 && ok1:
		m = m1
	case ok0:
		m = m0
	default:
		return errors.New("no valid meta page")
	}
	ps := m.pageSize
	switch {
	case ps < pageHeaderSize+metaSize || ps > 1<<24:
		return fmt.Errorf("page size %d", ps)
	case m.pgid < 3 || m.pgid > size/ps:
		return fmt.Errorf("file is %d bytes but its pages reach %d×%d bytes (truncated?)", size, m.pgid, ps)
	case m.root < 2 || m.root >= m.pgid:
		return fmt.Errorf("root page %d outside the file's %d pages", m.root, m.pgid)
	case m.freelist == noFreelist:
		return nil
	case m.freelist < 2 || m.freelist >= m.pgid:
		return fmt.Errorf("free-list page %d outside the file's %d pages", m.freelist, m.pgid)
	}
	hdr := make([]byte, pageHeaderSize+8)
	if _, err := f.ReadAt(hdr, int64(m.freelist*ps)); err != nil {
		return fmt.Errorf("read free-list page: %w", err)
	}
	ne := binary.NativeEndian
	flags, count, overflow := ne.Uint16(hdr[8:]), uint64(ne.Uint16(hdr[10:])), uint64(ne.Uint32(hdr[12:]))
	if flags != freelistPageFlag {
		return fmt.Errorf("free-list page %d has type %#x", m.freelist, flags)
	}
	if m.freelist+overflow >= m.pgid {
		return fmt.Errorf("free-list page %d overflows the file's %d pages", m.freelist, m.pgid)
	}
	skip := uint64(0)
	if count == 0xFFFF {
		count, skip = ne.Uint64(hdr[pageHeaderSize:]), 1
	}
	if count > ((overflow+1)*ps-pageHeaderSize)/8-skip {
		return fmt.Errorf("free-list page %d claims %d ids", m.freelist, count)
	}
	ids := make([]byte, count*8)
	if _, err := f.ReadAt(ids, int64(m.freelist*ps+pageHeaderSize+skip*8)); err != nil {
		return fmt.Errorf("read free-list ids: %w", err)
	}
	for i := uint64(0); i < count; i++ {
		if id := ne.Uint64(ids[i*8:]); id < 2 || id >= m.pgid {
			return fmt.Errorf("free-list page %d lists page %d outside the file's %d pages", m.freelist, id, m.pgid)
		}
	}
	return nil
}
