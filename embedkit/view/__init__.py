"""Looking at an embedding: t-SNE/UMAP/PCA projections, PNG maps and interactive HTML maps."""
