"""One writer per folder: a lock file holding the writer's host and pid.

Two runs writing one store (or run folder) at once would interleave shards and
manifests. The second run is refused with a clear error; a lock left by a run
that was killed (its pid is gone on this host) is detected and taken over.
The lock is created with ``O_EXCL`` so that two starts at the same instant
cannot both win.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

from embedkit.errors import StoreError

LOCK = ".lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


class FolderLock:
    """Context manager: ``with FolderLock(folder, "embed"): ...`` holds ``folder/.lock`` while the block runs."""

    def __init__(self, folder, what: str = "a run"):
        self.path = Path(folder) / LOCK
        self.what = what
        self.held = False

    def __repr__(self) -> str:
        return f"FolderLock({str(self.path)!r}, held={self.held})"

    def acquire(self) -> "FolderLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "what": self.what}
        for _ in range(2):  # a second try after removing a stale lock
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder is not None and not self._stale(holder):
                    raise StoreError(
                        f"{str(self.path.parent)!r} is being written by another run ({holder.get('what', 'a run')}, "
                        f"pid {holder.get('pid')} on {holder.get('host')}); wait for it to finish, or if it is "
                        f"dead on another machine, delete {str(self.path)!r}") from None
                self.path.unlink(missing_ok=True)  # stale: its writer was killed
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            self.held = True
            return self
        raise StoreError(f"could not take the lock {str(self.path)!r}; another run keeps taking it")

    def _holder(self) -> dict | None:
        try:
            return json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None  # half-written or unreadable: treated as stale

    @staticmethod
    def _stale(holder: dict) -> bool:
        if holder.get("host") != socket.gethostname():
            return False  # a pid on another machine cannot be checked from here
        return not _alive(int(holder.get("pid", -1)))

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
