"""The one-writer lock: two real processes racing for it never both hold it, and a killed holder's lock is free."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import socket
import subprocess
import sys

import pytest

from embedkit.errors import StoreError
from embedkit.store.lock import FolderLock

ROUNDS = 300
DEAD = 2**22 + 1  # above Linux's pid_max default: no such process


def _racer(folder, barrier, wins, me):
    for r in range(ROUNDS):
        if me == 0 and r % 2:  # every other round starts with a lock file left behind by a killed run
            (folder / ".lock").write_text(json.dumps({"pid": DEAD, "host": socket.gethostname(), "what": "embed"}))
        barrier.wait()
        lock = FolderLock(folder, f"racer {me}")
        try:
            lock.acquire()
        except StoreError:
            pass
        wins[2 * r + me] = lock.held
        barrier.wait()  # both have tried while the winner still holds it
        lock.release()
        barrier.wait()


@pytest.mark.timeout(60)
def test_two_processes_racing_never_both_hold_the_lock(tmp_path):
    ctx = mp.get_context("fork")
    barrier, wins = ctx.Barrier(2), ctx.Array("b", 2 * ROUNDS)
    procs = [ctx.Process(target=_racer, args=(tmp_path, barrier, wins, me)) for me in (0, 1)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    assert [p.exitcode for p in procs] == [0, 0]
    per_round = [wins[2 * r] + wins[2 * r + 1] for r in range(ROUNDS)]
    assert per_round.count(2) == 0  # never two holders
    assert per_round.count(1) == ROUNDS  # and never none: a left-behind file is no obstacle
    assert not (tmp_path / ".lock").exists()


HOLD = "import sys, time; from embedkit.store.lock import FolderLock; FolderLock(sys.argv[1], 'embed').acquire(); " \
       "print('held', flush=True); time.sleep(60)"


def hold_lock(folder) -> subprocess.Popen:
    """A live process holding ``folder``'s lock (as a running embed would)."""
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


@pytest.mark.timeout(60)
def test_a_live_holder_is_named_and_a_killed_one_frees_the_lock(tmp_path):
    holder = hold_lock(tmp_path)
    try:
        with pytest.raises(StoreError, match=rf"being written by another run \(embed, pid {holder.pid} on "):
            FolderLock(tmp_path, "embed").acquire()
        assert (tmp_path / ".lock").exists()  # the refused run leaves the holder's file alone
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    with FolderLock(tmp_path, "embed") as lock:  # kill -9 released it: no stale-lock guessing
        assert lock.held and json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
    assert not (tmp_path / ".lock").exists()


def test_taking_the_lock_sweeps_what_killed_writers_left(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)  # a process that has exited
    left = [tmp_path / f".meta.json.{pid}.tmp", tmp_path / "shards" / f".00001.npy.{pid}.tmp",
            tmp_path / f".map.png.{pid}.tmp.png"]
    live = [tmp_path / f".meta.json.{os.getpid()}.tmp", tmp_path / "shards" / "00001.npy", tmp_path / ".hidden.1.txt"]
    for p in left + live:
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(b"x")
    (tmp_path / "index" / f".cosine-hnsw.tmp-{pid}").mkdir(parents=True)
    with FolderLock(tmp_path, "embed"):
        assert all(p.exists() for p in live)  # a running writer's file and ordinary files stay
        assert not any(p.exists() for p in left) and not (tmp_path / "index" / f".cosine-hnsw.tmp-{pid}").exists()
