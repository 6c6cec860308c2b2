"""Where an embed run spends its time: decode, forward and write seconds, and the stage that bounds the run.

"Why is my GPU idle?" without a profiler: the local engine times, in its one loop, the wait for the
loader's next decoded batch (with ``--workers`` the decoding itself runs beside the loop, so only the
time it holds the model up is counted), the forward passes and the store writes. On Ray, decode tasks
and model actors time their own work (seconds of all workers together) and the driver its writes.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass

STAGES = ("decode", "forward", "write")
#: what to try when a stage bounds the run (each an option of `embedkit embed`)
_ADVICE = {"decode": "more --workers (or --decode device) would feed the model faster",
           "forward": "the model is the bottleneck, as it should be",
           "write": "writing the store is the bottleneck (a slow disk?)"}


@dataclass
class StageTimes:
    """Seconds spent in each stage of an embed run."""

    decode: float = 0.0
    forward: float = 0.0
    write: float = 0.0

    @contextmanager
    def timing(self, stage: str):
        """Add the time of the ``with`` block to ``stage``."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            setattr(self, stage, getattr(self, stage) + time.perf_counter() - t0)

    @property
    def total(self) -> float:
        return self.decode + self.forward + self.write

    def share(self, stage: str) -> float:
        """The fraction of the timed seconds spent in ``stage`` (0 when nothing was timed)."""
        return getattr(self, stage) / self.total if self.total > 0 else 0.0

    @property
    def bound(self) -> str | None:
        """The stage that took longest: the one that bounds the run (None when nothing was timed)."""
        return max(STAGES, key=lambda s: getattr(self, s)) if self.total > 0 else None

    def line(self) -> str:
        """``stages: decode 3.2s (61%), forward 1.8s (34%), write 0.3s (5%); decode bounds the run: ...``"""
        parts = ", ".join(f"{s} {getattr(self, s):.1f}s ({self.share(s):.0%})" for s in STAGES)
        if self.bound is None:
            return f"stages: {parts}"
        return f"stages: {parts}; {self.bound} bounds the run: {_ADVICE[self.bound]}"

    def to_dict(self) -> dict:
        return {**asdict(self), "bound": self.bound}
