package admin

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// writeFileAtomic replaces the file at path with data so that whoever
// reads it next (a reload, tetherd starting after a crash or a power
// cut) finds the old file or the new one whole, never a mix: the data
// goes to a temporary file in the same directory (a rename is atomic
// only within one file system), is synced, and is renamed over path.
// The file keeps its mode; a new one gets 0644.
func writeFileAtomic(path string, data []byte) error {
	// A configuration reached through a symlink (/etc/tether/tether.yaml
	// pointing at a config disk) is written where the link points:
	// renaming over the link would replace it with a file on the wrong
	// disk, which the next boot would not see.
	target := path
	if resolved, err := filepath.EvalSymlinks(path); err == nil {
		target = resolved
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("write %s: %w", path, err)
	}
	mode := fs.FileMode(0o644)
	if fi, err := os.Stat(target); err == nil {
		mode = fi.Mode().Perm()
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("write %s: %w", target, err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(target), "."+filepath.Base(target)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", target, err)
	}
	renamed := false
	defer func() {
		if !renamed {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if _, err := tmp.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", tmp.Name(), err)
	}
	// CreateTemp makes the file 0600; Chmod, unlike the mode given at
	// creation, is not narrowed by the umask.
	if err := tmp.Chmod(mode); err != nil {
		return fmt.Errorf("write %s: %w", tmp.Name(), err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("write %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), target); err != nil {
		return fmt.Errorf("write %s: %w", target, err)
	}
	renamed = true
	// The rename survives a crash only once the directory is synced. It
	// has happened either way, so a failure here is not reported as a
	// failed write: the file on disk is the new one, and the caller must
	// treat it so.
	if d, err := os.Open(filepath.Dir(target)); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}
