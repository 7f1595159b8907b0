"""Calibration samples: ``nsamples`` windows of ``seqlen`` tokens, drawn with a seed.

As in the reference Wanda/SparseGPT loaders: pick a random document long enough, then a
random window inside it. Before drawing, documents are tokenised in order only until those longer
than ``seqlen`` hold ``nsamples × seqlen`` tokens (the exact check; a large corpus costs little), so a
corpus that cannot serve fails at once with its name, never after many draws or out of memory.
"""

from __future__ import annotations

import random

import torch

from pruneflow.core.artifacts import load_tensors, save_tensors
from pruneflow.data.corpora import BYTE_SLACK, CorpusError


class CalibrationError(CorpusError, ValueError):
    pass


def sample_windows(
    documents: list[str], tokenizer, nsamples: int, seqlen: int, seed: int, source: str = "the calibration corpus"
) -> torch.Tensor:
    """Return token ids of shape [nsamples, seqlen] (int64); ``source`` names the corpus in errors."""
    cache = _check_enough_tokens(documents, tokenizer, nsamples, seqlen, source)
    rng = random.Random(seed)
    long_enough = sum(len(ids) > seqlen for ids in cache.values())
    windows = []
    attempts = 0
    max_attempts = 50 * nsamples + 10 * len(documents)
    while len(windows) < nsamples:
        attempts += 1
        if attempts > max_attempts:
            raise CalibrationError(
                f"{source}: after {max_attempts} draws only {len(windows)} of nsamples={nsamples} "
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


def _check_enough_tokens(documents, tokenizer, nsamples, seqlen, source, chunk=64) -> dict[int, list[int]]:
    """Tokenise documents in order until those longer than seqlen hold nsamples × seqlen tokens;
    raise naming ``source`` if the whole corpus does not. Returns the token ids seen, by index."""
    if not documents:
        raise CalibrationError(f"{source}: no documents (the calibration part is empty); allowed: a corpus with text")
    need, usable, longest = nsamples * seqlen, 0, 0
    cache: dict[int, list[int]] = {}
    # A document of b bytes has at most b + BYTE_SLACK tokens (corpora.corpus_bounds): shorter ones cannot serve.
    candidates = [i for i, d in enumerate(documents) if len(d.encode()) + BYTE_SLACK > seqlen]
    for start in range(0, len(candidates), chunk):
        if usable >= need:
            break
        batch = candidates[start : start + chunk]
        for i, ids in zip(batch, tokenizer([documents[i] for i in batch], add_special_tokens=False)["input_ids"]):
            cache[i] = ids
            longest = max(longest, len(ids))
            usable += len(ids) if len(ids) > seqlen else 0
    if usable == 0:
        longest_bytes = max(len(d.encode()) for d in documents)
        raise CalibrationError(
            f"{source}: nsamples={nsamples} windows of seqlen={seqlen} tokens need documents longer than seqlen, but "
            f"none of its {len(documents)} documents is (the longest: {longest_bytes} bytes"
            + (f", {longest} tokens" if longest else "") + "); lower calibration.seqlen or use a corpus with longer documents"
        )
    if usable < need:
        raise CalibrationError(
            f"{source}: nsamples={nsamples} windows of seqlen={seqlen} tokens need {need} tokens, but its documents "
            f"longer than seqlen hold {usable}; lower calibration.nsamples or calibration.seqlen, or use a larger corpus"
        )
    return cache


def save_calibration(path, ids: torch.Tensor, **metadata: str) -> None:
    """Store token windows [nsamples, seqlen] as safetensors (key ``input_ids``), atomically."""
    save_tensors(path, {"input_ids": ids}, metadata=metadata)


def load_calibration(path) -> torch.Tensor | None:
    """Token windows [nsamples, seqlen] from :func:`save_calibration` (checksum verified); None for no path."""
    return load_tensors(path)[0]["input_ids"] if path else None
