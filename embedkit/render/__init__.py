"""Outputs people look at: PNG figures (``plots``) and HTML galleries with thumbnails (``gallery``)."""
