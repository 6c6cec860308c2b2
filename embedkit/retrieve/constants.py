"""Choices of the retrieval stage, importable without NumPy or FAISS (the CLI builds its options from them)."""

METRICS = ("l2", "ip", "cosine")
KINDS = ("auto", "flat", "ivf", "hnsw")
BACKENDS = ("auto", "faiss", "faiss-gpu", "torch")
STORAGES = ("auto", "memory", "stream")
#: near-duplicate threshold when none is given (a cosine distance; the other metrics need one)
DEFAULT_COSINE_THRESHOLD = 0.05
