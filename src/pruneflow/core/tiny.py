"""A tiny randomly initialised LLaMA with a byte-level tokenizer, built entirely in code.

Tests and CI use it to run the real code paths in seconds without any download.
"""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from pruneflow.spec.model_config import TINY_DEFAULTS, TINY_FIXED


def byte_tokenizer(add_bos: bool = False) -> PreTrainedTokenizerFast:
    """A byte-level BPE without merges: 256 byte tokens plus BOS/EOS. With ``add_bos`` a call with special
    tokens (the default) puts one BOS before the text, as a LLaMA tokenizer does; without, it adds nothing."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {"<s>": 0, "</s>": 1, **{ch: i + 2 for i, ch in enumerate(sorted(alphabet))}}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    if add_bos:
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 0)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>")


def build_tiny_model(
    hidden_size: int = TINY_DEFAULTS["hidden_size"],
    intermediate_size: int = TINY_DEFAULTS["intermediate_size"],
    num_hidden_layers: int = TINY_DEFAULTS["num_hidden_layers"],
    num_attention_heads: int = TINY_DEFAULTS["num_attention_heads"],
    num_key_value_heads: int = TINY_DEFAULTS["num_key_value_heads"],
    seed: int = TINY_DEFAULTS["seed"],
    add_bos: bool = False,
):
    """Return (model, tokenizer); the same seed gives the same weights. ``add_bos``: see :func:`byte_tokenizer`."""
    tok = byte_tokenizer(add_bos)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_key_value_heads,
        max_position_embeddings=TINY_FIXED["max_position_embeddings"],
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.eval()
    assert len(tok) == TINY_FIXED["vocab_size"]
    return model, tok
