"""Retrieval: nearest neighbours over codes (FAISS or torch), deduplication, a kNN classifier."""
