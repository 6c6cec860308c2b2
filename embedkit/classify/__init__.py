"""Classification of codes: kernel SVMs (scikit-learn or cuML), a scalable fall-back, kNN, a logistic baseline.

- ``svm``: :class:`SVMClassifier` / :class:`LogisticBaseline`, scikit-learn estimators; ``svm_backend`` (device-aware).
- ``gridsearch``: the fast kernel grid search (one Gram matrix, every kernel/C/gamma from it; fewer folds for
  small classes).
- ``large``: the memory budget of an exact kernel SVM, decided before reading codes, and the fall-back
  :class:`ApproxKernelSVM` (Nystroem features + a linear SVM trained by streaming).
- ``knn``: the k-nearest-neighbour vote as a classify method.
- ``metrics``: top-k precision, globally and per class.
- ``train``: ``embedkit classify train`` (split, plan, search, refit, save, evaluate).
- ``apply``: chunked reading and scoring of stores; ``evaluate_store`` and ``predict_sources``.
- ``model_folder`` / ``serialize``: the on-disk format of a trained classifier (JSON + npz, no pickle).
- ``evaluate``: evaluation reports (JSON/text, failure gallery, then confusion matrix and per-class plot).
- ``constants``: names shared with the CLI (cheap to import).
"""
