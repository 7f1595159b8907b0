"""Perplexity and measured sparsity, zero-shot accuracy, speed, per-block sensitivity."""
