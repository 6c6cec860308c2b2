"""Classification of codes: SVMs (scikit-learn or cuML) and a logistic baseline.

- ``svm``: :class:`SVMClassifier` / :class:`LogisticBaseline`, scikit-learn estimators.
- ``gridsearch``: the fast kernel grid search (one Gram matrix per fold, every C and gamma from it).
- ``metrics``: top-k precision, globally and per class.
- ``train``: the ``embedkit classify`` pipeline (split, search, refit, save, evaluate, predict).
- ``model_folder``: the on-disk format of a trained classifier.
- ``evaluate``: evaluation reports (JSON/text, confusion matrix, per-class plot, failure gallery).
"""
