"""Calibration samples: ``nsamples`` windows of ``seqlen`` tokens, drawn with a seed.

As in the reference Wanda/SparseGPT loaders: pick a random document long enough, then a
random window inside it. Documents are tokenised lazily, so a large corpus costs little.
"""

from __future__ import annotations

import random

import torch

from .artifacts import load_tensors, save_tensors


class CalibrationError(ValueError):
    pass


def sample_windows(documents: list[str], tokenizer, nsamples: int, seqlen: int, seed: int) -> torch.Tensor:
    """Return token ids of shape [nsamples, seqlen] (int64)."""
    rng = random.Random(seed)
    cache: dict[int, list[int]] = {}
    long_enough = 0
    windows = []
    attempts = 0
    max_attempts = 50 * nsamples + 10 * len(documents)
    while len(windows) < nsamples:
        attempts += 1
        if attempts > max_attempts:
            raise CalibrationError(
                f"calibration corpus too short: after {max_attempts} draws only {len(windows)} of nsamples={nsamples} "
                f"windows of seqlen={seqlen} tokens were found ({long_enough} of {len(cache)} documents tried are long "
                "enough); lower calibration.seqlen or choose a corpus with longer documents"
            )
        i = rng.randrange(len(documents))
        if i not in cache:
            cache[i] = tokenizer(documents[i], add_special_tokens=False)["input_ids"]
            long_enough += len(cache[i]) > seqlen
        ids = cache[i]
        if len(ids) <= seqlen:
            continue
        start = rng.randrange(len(ids) - seqlen)
        windows.append(ids[start : start + seqlen])
    return torch.tensor(windows, dtype=torch.long)


def save_calibration(path, ids: torch.Tensor, **metadata: str) -> None:
    """Store token windows [nsamples, seqlen] as safetensors (key ``input_ids``), atomically."""
    save_tensors(path, {"input_ids": ids}, metadata=metadata)


def load_calibration(path) -> torch.Tensor | None:
    """Token windows [nsamples, seqlen] from :func:`save_calibration` (checksum verified); None for no path."""
    return load_tensors(path)[0]["input_ids"] if path else None
