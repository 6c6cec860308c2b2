"""Fine-tuning a backbone for a new image domain.

- ``data``: training data (readable images, labels, splits) and augmentation.
- ``layers``: numbered weight layers and layer-group specs (``1-10,17-19``).
- ``train``: strategies (adaptive, frozen base + head, unfreeze top), the training loop, checkpoints.
"""
