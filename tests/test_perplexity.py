import math

import pytest
import torch

from pruneflow.core.sparsity import SparsityError, check_sparsity, measured_sparsity
from pruneflow.core.tiny import byte_tokenizer
from pruneflow.data.corpora import CorpusError
from pruneflow.evaluate.perplexity import EvaluationError, eval_windows, leading_ids, perplexity


def test_windows_follow_the_protocol():
    tok = byte_tokenizer()
    docs = ["abcdefghij", "klmnopqrst"]
    stream = tok("\n\n".join(docs), add_special_tokens=False)["input_ids"]
    plain = eval_windows(docs, tok, seqlen=5, windows=3, bos=False)
    assert plain.tolist() == [stream[0:5], stream[5:10], stream[10:15]]
    with_bos = eval_windows(docs, tok, seqlen=5, windows=2, bos=True)
    assert with_bos[:, 0].tolist() == [tok.bos_token_id] * 2
    assert with_bos[:, 1:].tolist() == [stream[0:4], stream[4:8]]
    assert eval_windows(docs, tok, seqlen=5, windows=0, bos=False).shape == (len(stream) // 5, 5)


def test_leading_ids_stop_early_only_where_the_prefix_agrees():
    """A prefix is used when a longer one agrees with it; a tokenizer whose first token depends on the
    end of the text (no prefix ever agrees with the whole) is tokenised whole."""
    tok = byte_tokenizer()
    text = "".join(chr(97 + i % 26) for i in range(5000))
    calls = []

    def counting(part, **kw):
        calls.append(len(part))
        return tok(part, **kw)

    assert leading_ids(counting, text, 10) == tok(text, add_special_tokens=False)["input_ids"][:10]
    assert max(calls) < len(text)

    def last_char_first(part, **kw):
        ids = tok(part, **kw)["input_ids"]
        return {"input_ids": ids[-1:] + ids}

    assert leading_ids(last_char_first, text, 10) == last_char_first(text)["input_ids"]


def test_too_few_tokens_is_an_error_naming_the_corpus():
    with pytest.raises(EvaluationError, match="windows"):
        eval_windows(["abc"], byte_tokenizer(), seqlen=8, windows=4, bos=False)
    with pytest.raises(CorpusError, match=r"corpus 'w' \(w\.txt\), held-out part x\.jsonl, too short: 3 tokens give 0 windows"):
        eval_windows(["abc"], byte_tokenizer(), seqlen=8, windows=4, bos=False, source="corpus 'w' (w.txt), held-out part x.jsonl,")


def test_bos_true_without_bos_token_is_an_error():
    tok = byte_tokenizer()
    tok.bos_token = None
    with pytest.raises(EvaluationError, match="no BOS"):
        eval_windows(["abcdefgh" * 10], tok, 8, 2, bos=True)


def test_perplexity_matches_the_models_own_loss(tiny):
    model, tok = tiny
    windows = eval_windows(["The quick brown fox jumps over the lazy dog. " * 20], tok, 32, 4, bos=True)
    result = perplexity(model, windows, batch_size=3)
    with torch.no_grad():
        losses = [model(w[None], labels=w[None]).loss.item() for w in windows]
    assert result["tokens"] == 4 * 31
    assert result["perplexity"] == pytest.approx(math.exp(sum(losses) / 4), rel=1e-5)


def test_zeros_of_the_dense_weights_do_not_fail_an_nm_check(tiny):
    """A quantised checkpoint has exact zeros of its own (Gemma 3's Q4_K_M GGUF); a 2:4 group may keep one,
    so the matrix has more zeros than requested. The check reads what the masks prune; the zeros stay reported."""
    from pruneflow.core.architectures import architecture_of

    model, _ = tiny
    arch = architecture_of(model)
    masks = {i: {name: torch.ones_like(arch.weight(layer), dtype=torch.bool) for name, layer in arch.block_linears(block).items()}
             for i, block in enumerate(arch.get_blocks(model))}
    q = model.model.layers[0].self_attn.q_proj.weight
    with torch.no_grad():
        q[:, 0::4] = 0  # one dense zero in every group of four, at the group's first weight
    masks[0]["self_attn.q_proj"] = (torch.arange(q.shape[1]) % 2 == 0).expand_as(q).clone()  # 2:4 keeping 1st and 3rd
    m = measured_sparsity(model, masks)["per_matrix"]["0.self_attn.q_proj"]
    assert m["pruned_fraction"] == 0.5 and m["sparsity"] == 0.75
    check_sparsity({"per_matrix": {"0.self_attn.q_proj": m}}, 0.5)
    with pytest.raises(SparsityError, match="0.self_attn.q_proj"):
        check_sparsity({"per_matrix": {"0.self_attn.q_proj": {k: v for k, v in m.items() if k != "pruned_fraction"}}}, 0.5)


def test_measured_sparsity_counts_zeros_and_check_tolerates_one_weight_per_row(tiny):
    model, _ = tiny
    q = model.model.layers[0].self_attn.q_proj.weight
    with torch.no_grad():
        q[:, :32] = 0  # 50% of a 64x64 matrix
    m = measured_sparsity(model)
    assert m["per_matrix"]["0.self_attn.q_proj"]["sparsity"] == 0.5
    assert m["per_matrix"]["1.self_attn.q_proj"]["sparsity"] == 0.0
    only_q = {"per_matrix": {"0.self_attn.q_proj": m["per_matrix"]["0.self_attn.q_proj"]}}
    check_sparsity(only_q, 0.5 + 0.9 / 64)  # within one weight per row
    with pytest.raises(SparsityError, match="0.self_attn.q_proj"):
        check_sparsity(only_q, 0.6)
