"""One process per resource: an ``flock`` on a lock file that names its owner's pid."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


class Locked(RuntimeError):
    """Another process holds the lock (the message names its pid)."""


def take_lock(path: Path, what: str) -> int:
    """Lock ``path`` (created 0600) for this process and write our pid in it; the fd to keep open.

    Raises :class:`Locked` naming the owner's pid. The kernel releases the lock when
    the process dies, however it dies, so a stale file never blocks a restart."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise Locked(f"{what} is in use by another process (pid {owner})") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd
