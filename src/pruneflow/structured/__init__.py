"""Structured pruning of heads and FFN neurons, repaired by bias compensation or LIAR."""
