"""Retrieval: nearest neighbours over codes (FAISS or torch), deduplication, a kNN classifier.

- ``index``: :class:`KNNIndex`, the facade (parameters, fit/search/save/load, ids and paths);
- ``faiss_backend`` / ``torch_backend`` / ``exhaustive``: in-memory FAISS indexes, torch exact search, and exact
  search that streams a store chunk by chunk (``exhaustive_search``);
- ``persist``: the saved-index folder (JSON paths, checksums, store fingerprint);
- ``cache``: ``cached_index``, the store's index cache in ``<store>/index/``;
- ``queries``: ``collect_queries`` / ``embed_queries`` for query images;
- ``dedupe``: near-duplicate groups; ``knn_classifier``: :class:`KNNClassifier`;
- ``search``: ``embedkit.neighbors`` and ``embedkit.dedupe``, what ``embedkit neighbors`` prints.

Nothing is imported here, so ``import embedkit.retrieve`` stays cheap.
"""
