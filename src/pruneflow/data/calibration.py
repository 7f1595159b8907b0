"""Calibration samples: ``nsamples`` windows of ``seqlen`` tokens, drawn with a seed.

Two protocols (``calibration.protocol``):

- ``pruneflow`` (:func:`sample_windows`, the default): as in the reference loaders, a random document long
  enough, then a random window inside it; blank documents are skipped and text is tokenised without special
  tokens. Before drawing, documents are tokenised in order only until those longer than ``seqlen`` hold
  ``nsamples × seqlen`` tokens (the exact check; a large corpus costs little), so a corpus that cannot serve
  fails at once with its name, never after many draws or out of memory.
- ``reference`` (:func:`reference_windows`): the Wanda/SparseGPT code's C4 sampler exactly (``get_c4`` in
  their ``lib/data.py`` / ``datautils.py``): Python's ``random`` seeded once; for each sample,
  ``randint(0, n_rows - 1)`` until a row tokenised with special tokens has more than ``seqlen`` tokens, then
  ``randint(0, len - seqlen - 1)`` for the window start. Every row counts, in the corpus's order.
"""

from __future__ import annotations

import json
import random

import torch

from pruneflow.core import provenance
from pruneflow.core.artifacts import load_tensors, save_tensors
from pruneflow.data.corpora import BYTE_SLACK, CorpusError


class CalibrationError(CorpusError, ValueError):
    pass


def sample_windows(
    documents: list[str], tokenizer, nsamples: int, seqlen: int, seed: int, source: str = "the calibration corpus"
) -> torch.Tensor:
    """Return token ids of shape [nsamples, seqlen] (int64); ``source`` names the corpus in errors."""
    documents = [d for d in documents if d.strip()]
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


def reference_windows(
    documents: list[str], tokenizer, nsamples: int, seqlen: int, seed: int, source: str = "the calibration corpus"
) -> torch.Tensor:
    """The reference's sampler (module docstring): token ids [nsamples, seqlen] (int64). ``documents``: every
    row of the calibration part, in order. Raises naming ``source`` when no row is longer than ``seqlen``
    (where the reference would loop for ever)."""
    # One row longer than seqlen is enough for the reference's loop to end; the check draws nothing.
    cache = _check_enough_tokens(documents, tokenizer, nsamples, seqlen, source, add_special_tokens=True, need=seqlen + 1)
    rng = random.Random(seed)  # the same stream as random.seed(seed) and the module's randint
    windows = []
    for _ in range(nsamples):
        while True:
            i = rng.randint(0, len(documents) - 1)
            if i not in cache:
                cache[i] = tokenizer(documents[i])["input_ids"]  # with special tokens, as the reference
            if len(cache[i]) > seqlen:
                break
        start = rng.randint(0, len(cache[i]) - seqlen - 1)
        windows.append(cache[i][start : start + seqlen])
    return torch.tensor(windows, dtype=torch.long)


def calibration_windows(documents, tokenizer, nsamples, seqlen, seed, protocol="pruneflow", source="the calibration corpus"):
    """Token ids [nsamples, seqlen] under ``protocol`` (``pruneflow`` or ``reference``)."""
    if protocol == "reference":
        return reference_windows(documents, tokenizer, nsamples, seqlen, seed, source)
    if protocol == "pruneflow":
        return sample_windows(documents, tokenizer, nsamples, seqlen, seed, source)
    raise CalibrationError(f"calibration.protocol: {protocol!r} is unknown; allowed: pruneflow, reference")


def _check_enough_tokens(documents, tokenizer, nsamples, seqlen, source, chunk=64, add_special_tokens=False, need=None) -> dict[int, list[int]]:
    """Tokenise documents in order until those longer than seqlen hold ``need`` (default nsamples × seqlen)
    tokens; raise naming ``source`` if the whole corpus does not. Returns the token ids seen, by index."""
    if not any(d.strip() for d in documents):
        raise CalibrationError(f"{source}: no documents (the calibration part is empty); allowed: a corpus with text")
    need, usable, longest = need or nsamples * seqlen, 0, 0
    cache: dict[int, list[int]] = {}
    # A document of b bytes has at most b + BYTE_SLACK tokens (corpora.corpus_bounds): shorter ones cannot serve.
    candidates = [i for i, d in enumerate(documents) if len(d.encode()) + BYTE_SLACK > seqlen]
    for start in range(0, len(candidates), chunk):
        if usable >= need:
            break
        batch = candidates[start : start + chunk]
        texts = [documents[i] for i in batch]
        for i, ids in zip(batch, tokenizer(texts, add_special_tokens=add_special_tokens)["input_ids"]):
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
    """Store token windows [nsamples, seqlen] as safetensors (key ``input_ids``), atomically, with what made them."""
    made_by = json.dumps(provenance.record(), sort_keys=True)
    save_tensors(path, {"input_ids": ids}, metadata={**metadata, "pruneflow.made_by": made_by})


def load_calibration(path) -> torch.Tensor | None:
    """Token windows [nsamples, seqlen] from :func:`save_calibration` (checksum verified); None for no path."""
    return load_tensors(path)[0]["input_ids"] if path else None
