"""Micro-batching of concurrent searches: queries that arrive together are searched as one matrix.

A FAISS flat search of one query streams every code through the CPU for a single dot product per row;
of 32 queries, the same pass (a BLAS matrix product) serves all 32. Request threads hand their query
vectors to :meth:`SearchBatcher.search` and wait; one worker thread takes everything queued, searches
it with the largest ``k`` asked and hands each caller its own rows. Only that worker touches the
index, so concurrent requests never run FAISS's thread pool on top of each other.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future

import numpy as np

#: most query rows searched in one call (bounds the result matrices and one call's latency)
MAX_BATCH_ROWS = 256


class SearchBatcher:
    """Runs ``index.search`` on one thread, batching the queries queued while the previous batch ran."""

    def __init__(self, index, max_rows: int = MAX_BATCH_ROWS):
        self.index = index
        self.max_rows = int(max_rows)
        self._queue: queue.Queue = queue.Queue()
        self.batches = self.queries = 0  # counters (read by /api/info): the mean batch size is queries / batches
        self._thread = threading.Thread(target=self._run, name="embedkit-search", daemon=True)
        self._thread.start()

    def search(self, Q: np.ndarray, k: int):
        """``(distances, ids)`` of the ``k`` nearest codes of each row of ``Q``, as ``index.search`` gives them."""
        fut: Future = Future()
        self._queue.put((np.asarray(Q, dtype=np.float32), int(k), fut))
        return fut.result()

    def close(self) -> None:
        """Stop the worker (after the queries already queued)."""
        self._queue.put(None)
        self._thread.join(timeout=10)

    def _take_batch(self, first):
        batch, rows = [first], len(first[0])
        while rows < self.max_rows:
            try:
                nxt = self._queue.get_nowait()
            except queue.Empty:
                break
            if nxt is None:  # close(): finish this batch, then stop
                self._queue.put(None)
                break
            batch.append(nxt)
            rows += len(nxt[0])
        return batch

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = self._take_batch(first)
            k = max(item[1] for item in batch)
            self.batches += 1
            self.queries += sum(len(item[0]) for item in batch)
            try:
                D, ids = self.index.search(np.concatenate([item[0] for item in batch]), k)
            except Exception as exc:  # noqa: BLE001 - handed to every caller of the batch, raised in its thread
                for _, _, fut in batch:
                    fut.set_exception(exc)
                continue
            start = 0
            for Q, k_i, fut in batch:
                fut.set_result((D[start:start + len(Q), :k_i], ids[start:start + len(Q), :k_i]))
                start += len(Q)
