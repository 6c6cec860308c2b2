"""Weight-space averaging of the linear-probe and the fine-tuned network (WiSE-FT), its mix chosen on validation.

``head-then-top`` passes through two networks worth keeping: at the end of phase 1, the pretrained backbone
with a head fitted on its frozen features (the *linear probe*), and at the best epoch of phase 2, the
fine-tuned network. Fine-tuning on a few hundred images moves the features towards the training designs;
the interpolation ``(1 - alpha) * probe + alpha * fine-tuned`` of every weight keeps part of that gain and
part of the pretrained features' robustness, and is often better than both on unseen distributions
(Wortsman et al. 2022, "Robust fine-tuning of zero-shot models"). Both ends share the pretrained start, so
their straight line stays in one basin (no re-training needed). ``alpha`` is chosen by validation accuracy,
i.e. on the validation designs only, never on the test ones.
"""

from __future__ import annotations

import torch

from embedkit.errors import ConfigError

#: candidate mixes: 0 = the linear probe (pretrained features), 1 = the fine-tuned network
ALPHAS = (0.25, 0.5, 0.75, 1.0)


def interpolate(probe: dict, tuned: dict, alpha: float) -> dict:
    """``(1 - alpha) * probe + alpha * tuned`` for every floating tensor; other buffers (counters) from ``tuned``."""
    if set(probe) != set(tuned):
        raise ConfigError("the two networks to average have different parameters; both must come from one run")
    return {k: torch.lerp(probe[k].float(), v.float(), float(alpha)).to(v.dtype) if v.is_floating_point() else v
            for k, v in tuned.items()}


def choose_alpha(model, probe: dict, tuned: dict, evaluate, alphas=ALPHAS) -> tuple[float, dict]:
    """The ``alpha`` of the best validation accuracy (``evaluate(model) -> accuracy``) and every alpha's accuracy.

    Ties go to the smaller ``alpha``: with equal validation accuracy, the network closer to the pretrained
    features is the safer one on designs nobody has seen. ``model`` is left holding the chosen weights.
    """
    if not alphas or not all(0.0 <= float(a) <= 1.0 for a in alphas):
        raise ConfigError(f"averaging mixes {alphas!r} are not valid; give numbers in [0, 1]")
    scores = {}
    for a in sorted(float(a) for a in alphas):
        model.load_state_dict(interpolate(probe, tuned, a))
        scores[a] = float(evaluate(model))
    best = max(scores, key=lambda a: (scores[a], -a))
    model.load_state_dict(interpolate(probe, tuned, best))
    return best, scores
