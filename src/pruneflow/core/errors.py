"""Errors shared by the modules that read a model's structure (architectures, experts), kept apart so neither
imports the other for them."""


class UnsupportedModelError(ValueError):
    """PruneFlow cannot find a part it needs in this model; the message says which and how to add it."""
