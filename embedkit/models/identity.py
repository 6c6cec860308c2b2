"""The identity of a code set: backbone, layer, weights, preprocessing and spatial reduction.

Two code sets (a store and a model or index) are comparable only when their identities agree.
Identities travel as their JSON form (a dict, as stored in ``meta.json`` / ``model.json``, made by
:meth:`embedkit.models.backbone.Backbone.identity`). Codes imported without a backbone have no
identity (None): they compare equal only to other codes without one.
"""

from __future__ import annotations

IDENTITY_KEYS = ("backbone", "layer", "node", "spatial", "preprocessing")
#: how the codes were computed -> the option that sets it
NUMERICS = {"precision": "--precision", "decode": "--decode"}


def identity_mismatch(a: dict | None, b: dict | None) -> list[str]:
    """Human-readable differences between two code identities (empty when compatible)."""
    if a is None or b is None:
        if a is None and b is None:
            return []
        known = a or b
        return [f"codes without a backbone identity vs {known.get('backbone')}/{known.get('layer')}"]
    diffs = [f"{k}: {a.get(k)!r} vs {b.get(k)!r}" for k in IDENTITY_KEYS if a.get(k) != b.get(k)]
    wa, wb = a.get("weights") or {}, b.get("weights") or {}
    if (wa.get("identity"), wa.get("sha256")) != (wb.get("identity"), wb.get("sha256")):
        diffs.append(f"weights: {wa.get('identity')!r} vs {wb.get('identity')!r}")
    return diffs


def numerics_mismatch(made: dict | None, new: dict | None) -> list[str]:
    """How codes ``new`` were computed differently from codes ``made`` (precision, decoder), with the option
    that matches them; empty when alike or not recorded (stores before this record had neither).

    Codes of a GPU (bf16 autocast, nvJPEG) and of the CPU differ by about 0.4%: comparable, but not to be
    mixed in one store.
    """
    made, new = made or {}, new or {}
    return [f"{key} {made[key]} vs {new[key]}: give {option} {made[key]} to match"
            for key, option in NUMERICS.items() if made.get(key) and new.get(key) and made[key] != new[key]]
