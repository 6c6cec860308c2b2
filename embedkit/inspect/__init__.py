"""See what a network has learned: first-layer filters and top-9 activating patches, before and after fine-tuning.

- :mod:`.receptive`: receptive field (size, stride, padding) of any layer, computed from the network;
- :mod:`.activations`: a network stopped at one layer, returning its activation map;
- :mod:`.filters`: convolution filters as image grids;
- :mod:`.patches`: one pass over the images, a bounded top-k per channel, patches cut through the field;
- :mod:`.outputs` / :mod:`.figures`: the PNG grid and the self-contained HTML page.
"""
