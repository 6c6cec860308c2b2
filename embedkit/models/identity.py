"""The identity of a code set: backbone, layer, weights, preprocessing and spatial reduction.

Two code sets (a store and a model or index) are comparable only when their identities agree.
"""

from __future__ import annotations

IDENTITY_KEYS = ("backbone", "layer", "node", "spatial", "preprocessing")



def identity_mismatch(a: dict, b: dict) -> list[str]:
    """Human-readable differences between two code identities (empty when compatible)."""
    diffs = [f"{k}: {a.get(k)!r} vs {b.get(k)!r}" for k in IDENTITY_KEYS if a.get(k) != b.get(k)]
    wa, wb = a.get("weights", {}), b.get("weights", {})
    if (wa.get("identity"), wa.get("sha256")) != (wb.get("identity"), wb.get("sha256")):
        diffs.append(f"weights: {wa.get('identity')!r} vs {wb.get('identity')!r}")
    return diffs
