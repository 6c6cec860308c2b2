"""A new classifier head fitted in closed form on the frozen codes before any gradient step (LP-FT's linear probe).

``head-then-top`` trains a fresh head on frozen features before it unfreezes the network, so that the first
fine-tuning gradients are not those of a random head tearing at the pretrained features (Kumar et al. 2022,
"Fine-Tuning can Distort Pretrained Features and Underperform Out-of-Distribution"). A couple of SGD epochs
on a few hundred images leave that head far from fitted; ``head_init="logistic"`` starts it instead from the
optimum of the same problem: a multinomial logistic regression (scikit-learn, L-BFGS) on the codes of the
training split, computed once without augmentation. Only the training split is seen; the regularisation is
scikit-learn's default (C=1), not tuned, so nothing is chosen on the validation designs here.
"""

from __future__ import annotations

import numpy as np
import torch

from embedkit.errors import ConfigError
from embedkit.finetune.average import codes_of


def logistic_head(codes: np.ndarray, y: np.ndarray, n_classes: int, C: float = 1.0, seed: int = 0):
    """``(weight n_classes x D, bias n_classes)`` of a multinomial logistic regression of ``y`` on ``codes``.

    A class with no training image gets a zero weight and a bias below every other, so it is never predicted
    until fine-tuning gives it one.
    """
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=C, max_iter=2000, random_state=seed).fit(codes, y)
    coef, bias = clf.coef_, clf.intercept_
    if len(clf.classes_) == 2:  # scikit-learn keeps one row for two classes: the log-odds of the second
        coef, bias = np.vstack([-coef / 2, coef / 2]), np.array([-bias[0] / 2, bias[0] / 2])
    W = np.zeros((n_classes, codes.shape[1]), np.float32)
    b = np.full(n_classes, float(bias.min()) - 10.0, np.float32)
    W[clf.classes_], b[clf.classes_] = coef, bias
    return W, b


@torch.no_grad()
def fit_head(model, head, loader, targets, n_classes: int, device, seed: int = 0) -> float:
    """Set ``head`` (an ``nn.Linear``) to the logistic regression of its input codes on ``loader``'s images.

    Returns the head's accuracy on those training images (a check that the fit took, not a model selection).
    """
    if not isinstance(head, torch.nn.Linear):
        raise ConfigError(f"head_init='logistic' fits a linear classifier head; this backbone's head is a "
                          f"{type(head).__name__}. Use head_init='random'")
    codes, rows = codes_of(model, head, loader, device)
    if not rows:
        raise ConfigError("head_init='logistic' found no readable training image to fit the head on")
    X, y = codes.numpy().astype(np.float64), np.asarray(targets)[rows]
    if len(np.unique(y)) < 2:
        raise ConfigError("head_init='logistic' needs training images of at least 2 classes")
    W, b = logistic_head(X, y, n_classes, seed=seed)
    head.weight.copy_(torch.as_tensor(W, dtype=head.weight.dtype))
    head.bias.copy_(torch.as_tensor(b, dtype=head.bias.dtype))
    return float(((X @ W.T + b).argmax(1) == y).mean())
