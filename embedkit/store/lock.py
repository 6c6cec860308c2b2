"""One writer per folder: an advisory ``flock`` on ``folder/.lock``, which also names the holder.

Two runs writing one store (or run folder) at once would interleave shards and
manifests. The second run is refused with a clear error naming the holder (its
host, pid and what it does, written into the file). The lock itself is the
kernel's ``flock``, not the file's existence or content: it is taken in one
system call, so two starts at the same instant cannot both win, and it is
released by the kernel when its holder dies (kill -9 included), so a lock left
by a killed run needs no pid check and cannot be stolen from a live one. Taking the lock also removes
the temporary files killed writers left behind (:func:`~embedkit.atomic.sweep_temp`).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
from pathlib import Path

from embedkit.atomic import sweep_temp
from embedkit.errors import StoreError

LOCK = ".lock"


class FolderLock:
    """Context manager: ``with FolderLock(folder, "embed"): ...`` holds ``folder/.lock`` while the block runs."""

    def __init__(self, folder, what: str = "a run"):
        self.path = Path(folder) / LOCK
        self.what = what
        self.fd: int | None = None

    @property
    def held(self) -> bool:
        return self.fd is not None

    def __repr__(self) -> str:
        return f"FolderLock({str(self.path)!r}, held={self.held})"

    def acquire(self) -> "FolderLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(100):  # only repeated while holders keep releasing between our open and our flock
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                raise self._busy() from None
            if self._same_file(fd):
                me = {"pid": os.getpid(), "host": socket.gethostname(), "what": self.what}
                os.ftruncate(fd, 0)
                os.pwrite(fd, json.dumps(me).encode(), 0)  # for the message a second run prints; not the lock
                self.fd = fd
                sweep_temp(self.path.parent)  # what killed runs left half-written: nobody else writes here now
                return self
            os.close(fd)  # we locked a file its holder had just removed on release: take the new one
        raise StoreError(f"could not take the lock {str(self.path)!r}; other runs keep taking it")

    def _same_file(self, fd: int) -> bool:
        """Whether ``fd`` is still the file at ``self.path`` (a releasing holder unlinks it while locked)."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return False
        mine = os.fstat(fd)
        return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)

    def _busy(self) -> StoreError:
        try:
            holder = json.loads(self.path.read_text(encoding="utf-8"))
            holder = holder if isinstance(holder, dict) else {}
        except (OSError, ValueError):  # the holder is between taking the lock and naming itself
            holder = {}
        who = (f" ({holder.get('what', 'a run')}, pid {holder.get('pid')} on {holder.get('host')})"
               if holder.get("pid") else "")
        return StoreError(f"{str(self.path.parent)!r} is being written by another run{who}; wait for it to finish "
                          "(a killed run's lock is released by the system: nothing to delete)")

    def release(self) -> None:
        if self.fd is not None:
            # unlinked while still locked: a run waiting on this file sees it gone (_same_file) and retries
            self.path.unlink(missing_ok=True)
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
