"""Repair after pruning: layer-wise reconstruction (Free Lunch) and parameter-efficient
retraining (PERP), with the adapters that merge back without losing sparsity."""
