"""Names the classify CLI and library share, in a module cheap to import (no scikit-learn, no torch)."""

from __future__ import annotations

#: SVM kernels
KERNELS = ("rbf", "sigmoid", "linear", "poly")
#: multi-class decisions: one-vs-rest (the paper's) or one-vs-one
DECISIONS = ("ovr", "ovo")
#: classifiers of `embedkit classify train --method`
METHODS = ("svm", "knn")
