"""Weight-space averaging of the linear-probe and the fine-tuned network (WiSE-FT), its mix chosen on validation.

``head-then-top`` passes through two networks worth keeping: at the end of phase 1, the pretrained backbone
with a head fitted on its frozen features (the *linear probe*), and at the best epoch of phase 2, the
fine-tuned network. Fine-tuning on a few hundred images moves the features towards the training designs;
the interpolation ``(1 - alpha) * probe + alpha * fine-tuned`` of every weight keeps part of that gain and
part of the pretrained features' robustness, and is often better than both on unseen distributions
(Wortsman et al. 2022, "Robust fine-tuning of zero-shot models"). Both ends share the pretrained start, so
their straight line stays in one basin (no re-training needed). ``alpha`` is chosen on the validation split
only (the validation designs, never the test ones), by what the network is kept for: the accuracy of its codes
(:func:`code_accuracy`, the input of the classifier head, e.g. the pooled features or VGG's fc7) with a
nearest-class-mean classifier fitted on the training split. The softmax would favour the fine-tuned end: the
probe's head had only the first phase to fit.
"""

from __future__ import annotations

import torch

from embedkit.errors import ConfigError

#: candidate mixes: 0 = the linear probe (pretrained features), 1 = the fine-tuned network
ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)
#: the mix preferred among equal validation scores: WiSE-FT's default, halfway
TIE_ALPHA = 0.5


def interpolate(probe: dict, tuned: dict, alpha: float) -> dict:
    """``(1 - alpha) * probe + alpha * tuned`` for every floating tensor; other buffers (counters) from ``tuned``."""
    if set(probe) != set(tuned):
        raise ConfigError("the two networks to average have different parameters; both must come from one run")
    return {k: torch.lerp(probe[k].float(), v.float(), float(alpha)).to(v.dtype) if v.is_floating_point() else v
            for k, v in tuned.items()}


@torch.no_grad()
def codes_of(model, head, loader, device) -> tuple:
    """``(codes, rows)``: the input of ``head`` (the code layer below the classifier) for every image of ``loader``."""
    got = []
    hook = head.register_forward_pre_hook(lambda _m, inp: got.append(inp[0].detach().flatten(1).float().cpu()))
    rows = []
    try:
        model.eval()
        for idx, x, _infos, _bad in loader:
            if x is not None:
                model(x.to(device))
                rows.extend(int(i) for i in idx)
    finally:
        hook.remove()
    return (torch.cat(got) if got else torch.zeros(0, 0)), rows


def code_accuracy(train_codes, train_y, val_codes, val_y) -> float:
    """Nearest-class-mean accuracy of L2-normalised codes (no hyper-parameter to tune on a small validation set)."""
    t = torch.nn.functional.normalize(train_codes, dim=1)
    v = torch.nn.functional.normalize(val_codes, dim=1)
    ty, vy = torch.as_tensor(train_y), torch.as_tensor(val_y)
    classes = torch.unique(ty)
    means = torch.nn.functional.normalize(torch.stack([t[ty == c].mean(0) for c in classes]), dim=1)
    pred = classes[(v @ means.T).argmax(1)]
    return float((pred == vy).float().mean())


def val_code_accuracy(model, head, train_loader, val_loader, targets, device) -> float:
    """:func:`code_accuracy` of ``model``: codes of the training split (no augmentation) classify the validation split."""
    tc, tr = codes_of(model, head, train_loader, device)
    vc, vr = codes_of(model, head, val_loader, device)
    return code_accuracy(tc, targets[tr], vc, targets[vr])


def choose_alpha(model, probe: dict, tuned: dict, evaluate, alphas=ALPHAS) -> tuple[float, dict]:
    """The ``alpha`` of the best validation score (``evaluate(model) -> accuracy``) and every alpha's score.

    Ties go to the ``alpha`` nearest :data:`TIE_ALPHA` (then the smaller): a small validation split often
    cannot tell neighbouring mixes apart, and halfway is the mix that is robust without evidence either way.
    ``model`` is left holding the chosen weights.
    """
    if not alphas or not all(0.0 <= float(a) <= 1.0 for a in alphas):
        raise ConfigError(f"averaging mixes {alphas!r} are not valid; give numbers in [0, 1]")
    scores = {}
    for a in sorted(float(a) for a in alphas):
        model.load_state_dict(interpolate(probe, tuned, a))
        scores[a] = float(evaluate(model))
    best = max(scores, key=lambda a: (scores[a], -abs(a - TIE_ALPHA), -a))
    model.load_state_dict(interpolate(probe, tuned, best))
    return best, scores
