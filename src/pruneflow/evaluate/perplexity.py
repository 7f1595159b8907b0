"""Perplexity.

Two protocols (``perplexity.protocol``), on whichever held-out corpus is configured:

- ``pruneflow`` (:func:`eval_windows`, the default): the non-blank evaluation documents are joined with
  blank lines (``"\\n\\n"``) and tokenised once without special tokens; the stream is cut into
  non-overlapping windows of ``seqlen`` tokens and the first ``windows`` of them are scored (all of them if
  ``windows`` is 0). With ``bos``, each window is BOS + ``seqlen - 1`` text tokens, and the BOS position is
  never a prediction target.
- ``reference`` (:func:`reference_eval_windows`): the Wanda/SparseGPT code's WikiText-2 evaluation exactly
  (``get_wikitext2`` and ``eval_ppl_wikitext``): every row, empty ones too, joined with ``"\\n\\n"`` and
  tokenised once *with* the tokenizer's special tokens (a LLaMA tokenizer: one BOS at the very start);
  ``len // seqlen`` windows of ``seqlen`` tokens, the partial last one dropped, no BOS added per window.

Either way every token of a window but the first is predicted from the tokens before it in the same
window (no carried context), so ``tokens`` = windows × (seqlen - 1) predictions, and perplexity =
exp(mean negative log-likelihood): the reference's exp of the mean of per-window mean losses, since every
window has as many predictions.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from pruneflow.core.activations import activation_store, final_hidden_states, head_logits
from pruneflow.core.stream import ModelStream
from pruneflow.data.corpora import CorpusError


class EvaluationError(ValueError):
    pass


class EvaluationCorpusError(EvaluationError, CorpusError):
    """The held-out text cannot give the requested windows."""


def use_bos(tokenizer, bos) -> bool:
    """``auto`` follows the tokenizer's own habit (``add_bos_token``); ``True`` needs a BOS token."""
    if bos == "auto":
        return bool(getattr(tokenizer, "add_bos_token", False)) and tokenizer.bos_token_id is not None
    if bos and tokenizer.bos_token_id is None:
        raise EvaluationError("perplexity.bos is true but the tokenizer has no BOS token; set bos: false or auto")
    return bool(bos)


def leading_ids(tokenizer, text: str, count: int) -> list[int]:
    """At least the first ``count`` token ids of ``text``, equal to those of the whole text tokenised
    (all of its ids when ``count`` is 0 or the text is short). A prefix's tokens differ from the whole
    text's only near its cut, so a prefix is enough once one twice as long agrees with it on the first
    ``count``: 4 windows of the 1 MB default corpus tokenise 48 kB, in 0.03 s instead of 0.8 s."""
    def ids(part: str) -> list[int]:
        return tokenizer(part, add_special_tokens=False)["input_ids"]

    cut = 8 * count  # characters; prose has about 4 a token
    while count and 2 * cut < len(text):
        shorter, longer = ids(text[:cut]), ids(text[: 2 * cut])
        if len(shorter) > count and shorter[:count] == longer[:count]:
            return shorter[:count]
        cut *= 4
    return ids(text)


def eval_windows(documents: list[str], tokenizer, seqlen: int, windows: int, bos, source: str = "evaluation corpus") -> torch.Tensor:
    """Token windows [n, seqlen] following PruneFlow's protocol above; ``source`` names the corpus in errors."""
    with_bos = use_bos(tokenizer, bos)
    step = seqlen - 1 if with_bos else seqlen
    ids = leading_ids(tokenizer, "\n\n".join(d for d in documents if d.strip()), windows * step)
    n = _window_count(len(ids), step, windows, source, "text tokens")
    out = torch.tensor(ids[: n * step], dtype=torch.long).view(n, step)
    if with_bos:
        out = torch.cat([torch.full((n, 1), tokenizer.bos_token_id), out], dim=1)
    return out


def reference_eval_windows(rows: list[str], tokenizer, seqlen: int, windows: int, source: str = "evaluation corpus") -> torch.Tensor:
    """Token windows [n, seqlen] following the reference protocol above (``rows``: every row of the
    held-out part, in order); the first ``windows`` of them (0: all)."""
    ids = tokenizer("\n\n".join(rows))["input_ids"]  # with special tokens, as the reference's tokenizer call
    n = _window_count(len(ids), seqlen, windows, source, "tokens")
    return torch.tensor(ids[: n * seqlen], dtype=torch.long).view(n, seqlen)


def protocol_windows(documents: list[str], tokenizer, spec: dict, source: str = "evaluation corpus") -> torch.Tensor:
    """Token windows [n, seqlen] of a perplexity spec (``seqlen``, ``windows``, ``bos``, ``protocol``:
    :func:`pruneflow.spec.naming.parse_ppl_name`)."""
    protocol = spec.get("protocol", "pruneflow")
    if protocol == "reference":
        return reference_eval_windows(documents, tokenizer, spec["seqlen"], spec["windows"], source)
    if protocol == "pruneflow":
        return eval_windows(documents, tokenizer, spec["seqlen"], spec["windows"], spec.get("bos", "auto"), source)
    raise EvaluationError(f"perplexity.protocol: {protocol!r} is unknown; allowed: pruneflow, reference")


def _window_count(tokens: int, step: int, windows: int, source: str, what: str) -> int:
    available = tokens // step
    n = available if windows == 0 else windows
    if available < n or n == 0:
        raise EvaluationCorpusError(
            f"{source} too short: {tokens} tokens give {available} windows of {step} {what}, "
            f"{n} requested (perplexity.windows); lower perplexity.windows or perplexity.seqlen"
        )
    return n


@torch.no_grad()
def perplexity(model, windows: torch.Tensor, batch_size: int = 4, device="cpu", store: str = "auto") -> dict:
    """Perplexity of ``model`` over ``windows`` [n, seqlen]; returns ppl, nll, tokens.

    Block by block over all windows (``model``: in memory, or a :class:`~pruneflow.core.stream.ModelStream`,
    whose blocks are loaded one at a time): the windows' hidden states pass from block to block, then the
    model's own head scores them a window at a time, so the logits of one window are held at once. The
    same numbers as the whole-model forward. ``store``: where the hidden states wait between blocks,
    ``device``, ``cpu`` (in chunks, when they do not fit the device) or ``auto``
    (:func:`pruneflow.core.activations.activation_store`)."""
    stream = ModelStream.wrap(model)
    skeleton = stream.model
    if store == "auto":
        store = activation_store(windows.numel() * skeleton.config.hidden_size * 4, device)
    home = skeleton.get_input_embeddings().weight.device
    with stream.arch.blocks_detached(skeleton):
        skeleton.to(device)  # embeddings and head: the head scores every window on the device
    try:
        final = final_hidden_states(stream, windows, batch_size, device, store)
        nll_sum, tokens = 0.0, 0
        for chunk, hidden in tqdm(list(zip(windows.split(batch_size), final.hidden)), desc="perplexity (head)", unit="batch"):
            for ids, h in zip(chunk.split(1), hidden.split(1)):
                ids = ids.to(device)
                loss, n = window_nll(head_logits(skeleton, ids, h.to(device)), ids)
                nll_sum += loss
                tokens += n
    finally:
        with stream.arch.blocks_detached(skeleton):
            skeleton.to(home)
    return perplexity_result(nll_sum, tokens, windows)


def window_nll(logits: torch.Tensor, chunk: torch.Tensor) -> tuple[float, int]:
    """(summed NLL, predictions) of windows ``chunk`` [b, seqlen] given their ``logits`` [b, seqlen, vocab]."""
    logits = logits.float()
    # Predict token t+1 from tokens ≤ t; position 0 (BOS or first text token) is never a target.
    loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), chunk[:, 1:].reshape(-1), reduction="sum")
    return loss.item(), chunk[:, 1:].numel()


def perplexity_result(nll_sum: float, tokens: int, windows: torch.Tensor) -> dict:
    if not math.isfinite(nll_sum):
        raise EvaluationError("perplexity is not finite: the model produces NaN or infinite logits")
    nll = nll_sum / tokens
    return {"perplexity": math.exp(nll), "nll": nll, "tokens": tokens, "windows": int(windows.shape[0]), "seqlen": int(windows.shape[1])}
