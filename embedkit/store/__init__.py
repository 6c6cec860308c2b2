"""The code store: codes on disk, rows in step with paths, and their post-processing."""
