"""Unstructured and N:M pruning: criteria, masks, SparseGPT, the sequential and dense streams,
layer-wise sparsity allocation (OWL)."""
