"""Replacing a file safely: a new file beside it, then one rename.

Every file meshshift writes for others to read (the state file, Envoy's and Traefik's
watched configuration, nginx.conf, pid files) is replaced, never written in place:

- the new content goes to a temp file created in the same directory with a random name
  and O_CREAT|O_EXCL|O_NOFOLLOW (`tempfile.mkstemp`), so a symlink planted at a
  predictable name is never followed and never overwritten;
- `os.replace` swaps it in: a reader, or a process restarted after kill -9, sees the old
  file or the new one, never a mix (with `durable=True` the file and the directory are
  fsynced too);
- a symlink at the path itself is written through: its target is replaced, so a link
  (a state file kept on another volume, say) keeps pointing at the current content;
- the new file keeps the old one's permissions (new files: 0644, as a plain write gives
  with the usual umask; mkstemp alone would make them 0600, which an attached proxy
  running as another user could not read).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

NEW_FILE_MODE = 0o644


def real_target(path: Path) -> Path:
    """The file a write to `path` must replace: `path`, or the end of its symlink chain."""
    return Path(os.path.realpath(path))


@contextlib.contextmanager
def staged_file(path: Path, data: str | bytes, *, durable: bool = False) -> Iterator[Path]:
    """A new file beside `path`'s target holding `data`; it replaces the target when the block ends.

    If the block raises (a checker refused the staged file, say) the temp file is removed
    and the target is left as it was.
    """
    target = real_target(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    temp = Path(temp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), _mode_of(target))
            handle.write(data.encode() if isinstance(data, str) else data)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        yield temp
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise
    if durable:
        _fsync_directory(target.parent)


def write_atomically(path: Path, data: str | bytes, *, durable: bool = False) -> None:
    """Replace the file at `path` (or its symlink's target) with `data`, in one rename."""
    with staged_file(path, data, durable=durable):
        pass


def _mode_of(target: Path) -> int:
    try:
        return target.stat().st_mode & 0o7777
    except FileNotFoundError:
        return NEW_FILE_MODE


def _fsync_directory(directory: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets a directory be opened
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
