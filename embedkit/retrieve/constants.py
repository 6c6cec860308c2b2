"""Choices of the retrieval stage, importable without NumPy or FAISS (the CLI builds its options from them)."""

METRICS = ("l2", "ip", "cosine")
KINDS = ("auto", "flat", "ivf", "hnsw")
BACKENDS = ("auto", "faiss", "faiss-gpu", "torch")
STORAGES = ("auto", "memory", "stream")
