"""Embedding jobs: images -> model -> store, on one machine (``local``) or on Ray."""
