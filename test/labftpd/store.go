package labftpd

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"
	"sync"
	"time"
)

// entry describes one file or directory for LIST, SIZE and MDTM.
type entry struct {
	name    string
	size    int64
	dir     bool
	modTime time.Time
}

// store is what a session reads and writes. Paths are slash-separated,
// relative to the served root and already cleaned by resolve ("." is the
// root itself).
type store interface {
	stat(name string) (entry, error)
	list(dir string) ([]entry, error)
	open(name string) (io.ReadCloser, error)
	create(name string) (io.WriteCloser, error)
	close() error
}

// resolve turns a client path into a store path: it is taken relative to
// cwd (an absolute, cleaned path starting with "/") and cleaned, so ".."
// cannot climb above "/". The second result is the new absolute path.
func resolve(cwd, p string) (rel, abs string) {
	if !strings.HasPrefix(p, "/") {
		p = cwd + "/" + p
	}
	abs = path.Clean("/" + p)
	rel = strings.TrimPrefix(abs, "/")
	if rel == "" {
		rel = "."
	}
	return rel, abs
}

// dirStore serves a directory through os.Root, which refuses any path
// (including through symlinks) that leaves the directory.
type dirStore struct {
	root *os.Root
}

func newDirStore(dir string) (*dirStore, error) {
	r, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	return &dirStore{root: r}, nil
}

func (d *dirStore) stat(name string) (entry, error) {
	fi, err := d.root.Stat(name)
	if err != nil {
		return entry{}, err
	}
	return entryFromInfo(fi), nil
}

func (d *dirStore) list(dir string) ([]entry, error) {
	f, err := d.root.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	des, err := f.ReadDir(-1)
	if err != nil {
		return nil, err
	}
	out := make([]entry, 0, len(des))
	for _, de := range des {
		fi, err := de.Info()
		if err != nil {
			continue // removed meanwhile
		}
		out = append(out, entryFromInfo(fi))
	}
	slices.SortFunc(out, func(a, b entry) int { return strings.Compare(a.name, b.name) })
	return out, nil
}

func (d *dirStore) open(name string) (io.ReadCloser, error) {
	f, err := d.root.Open(name)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, errNotFile
	}
	return f, nil
}

func (d *dirStore) create(name string) (io.WriteCloser, error) {
	return d.root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
}

func (d *dirStore) close() error { return d.root.Close() }

func entryFromInfo(fi fs.FileInfo) entry {
	return entry{name: fi.Name(), size: fi.Size(), dir: fi.IsDir(), modTime: fi.ModTime()}
}

var errNotFile = errors.New("not a plain file")

// memStore serves an in-memory map of files; directories exist implicitly
// as prefixes of file names. STOR replaces a file when its writer is closed.
type memStore struct {
	mu      sync.Mutex
	files   map[string][]byte
	modTime time.Time
}

func newMemStore(files map[string][]byte, now time.Time) *memStore {
	m := &memStore{files: make(map[string][]byte, len(files)), modTime: now}
	for name, data := range files {
		rel, _ := resolve("/", name)
		if rel == "." {
			continue
		}
		m.files[rel] = bytes.Clone(data)
	}
	return m
}

func (m *memStore) isDir(name string) bool {
	if name == "." {
		return true
	}
	prefix := name + "/"
	for k := range m.files {
		if strings.HasPrefix(k, prefix) {
			return true
		}
	}
	return false
}

func (m *memStore) stat(name string) (entry, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if data, ok := m.files[name]; ok {
		return entry{name: path.Base(name), size: int64(len(data)), modTime: m.modTime}, nil
	}
	if m.isDir(name) {
		return entry{name: path.Base(name), dir: true, modTime: m.modTime}, nil
	}
	return entry{}, fs.ErrNotExist
}

func (m *memStore) list(dir string) ([]entry, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.isDir(dir) {
		return nil, fs.ErrNotExist
	}
	prefix := ""
	if dir != "." {
		prefix = dir + "/"
	}
	seen := make(map[string]bool)
	var out []entry
	for k, data := range m.files {
		rest, ok := strings.CutPrefix(k, prefix)
		if !ok {
			continue
		}
		name, _, isDir := strings.Cut(rest, "/")
		if seen[name] {
			continue
		}
		seen[name] = true
		e := entry{name: name, dir: isDir, modTime: m.modTime}
		if !isDir {
			e.size = int64(len(data))
		}
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b entry) int { return strings.Compare(a.name, b.name) })
	return out, nil
}

func (m *memStore) open(name string) (io.ReadCloser, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	data, ok := m.files[name]
	if !ok {
		if m.isDir(name) {
			return nil, errNotFile
		}
		return nil, fs.ErrNotExist
	}
	// The slice is never modified in place (create replaces it), so
	// reading it without the lock is safe.
	return io.NopCloser(bytes.NewReader(data)), nil
}

func (m *memStore) create(name string) (io.WriteCloser, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if name == "." || m.isDir(name) {
		return nil, errNotFile
	}
	return &memWriter{m: m, name: name}, nil
}

func (m *memStore) close() error { return nil }

// memWriter collects a STOR upload and publishes it on Close.
type memWriter struct {
	m    *memStore
	name string
	buf  bytes.Buffer
}

func (w *memWriter) Write(p []byte) (int, error) { return w.buf.Write(p) }

func (w *memWriter) Close() error {
	w.m.mu.Lock()
	defer w.m.mu.Unlock()
	w.m.files[w.name] = w.buf.Bytes()
	return nil
}
