"""PruneFlow: prune causal language models and repair them.

The library is importable and testable without Snakemake; the workflow's scripts
call it. Architecture knowledge lives in :mod:`pruneflow.core.architectures` only.
"""

__version__ = "0.1.0"
