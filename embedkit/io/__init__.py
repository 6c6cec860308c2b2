"""Reading images: the first stage of every job.

- ``discover``: which files (folder, list file, CSV manifest), with their labels.
- ``decode``: bytes to an RGB image, robustly (every odd mode converted; bad files give a reason).
- ``loader``: batches of preprocessed images from DataLoader workers, bad files kept aside.
"""
