"""Tiny randomly initialised models of every family PruneFlow is tested on, built in code from
transformers config classes (no download), and what structured pruning does for each.

Adding a family: one line in FAMILIES (config keys beyond COMMON) and, for structured pruning, the
outcome in STRUCTURED. tests/test_families.py runs every feature on every family and checks that the
families table of docs/models.md says what the tests saw.
"""

from __future__ import annotations

import torch
from transformers import AutoConfig, AutoModelForCausalLM

COMMON = dict(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=256, pad_token_id=0, bos_token_id=1, eos_token_id=2)

# Sliding windows (8) shorter than the test windows make per-layer masks matter.
FAMILIES: dict[str, dict] = {
    "llama": {},
    "mistral": dict(sliding_window=8),
    "qwen2": dict(use_sliding_window=True, sliding_window=8, max_window_layers=1),
    "qwen3": dict(head_dim=16),
    "gemma": dict(head_dim=16),
    "gemma2": dict(head_dim=16, sliding_window=8),
    "gemma3_text": dict(head_dim=16, sliding_window=8, sliding_window_pattern=2),
    "phi3": {},
    "gpt_neox": dict(num_key_value_heads=None),
    "falcon": dict(new_decoder_architecture=True, num_kv_heads=2),
    "olmo2": {},
    "granite": {},
    "stablelm": {},
    "opt": dict(ffn_dim=128, word_embed_proj_dim=64, num_key_value_heads=None, intermediate_size=None),
    "gpt2": dict(n_inner=128, num_key_value_heads=None, intermediate_size=None),
    "mixtral": dict(num_local_experts=4, num_experts_per_tok=2),
    "qwen3_moe": dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, head_dim=16),
}

MOE = ("mixtral", "qwen3_moe")

# Structured pruning per family and target, as the tests see it (and docs/models.md's table says).
WORKS = "works"
NONE_ONLY = "`none` only (no bias flag)"
HEAD_WIDTH = "clear error (head width)"
EXPERTS = "clear error (experts)"
STRUCTURED: dict[str, dict[str, str]] = {
    "llama": {"heads": WORKS, "neurons": WORKS},
    "mistral": {"heads": NONE_ONLY, "neurons": NONE_ONLY},
    "qwen2": {"heads": NONE_ONLY, "neurons": NONE_ONLY},
    "qwen3": {"heads": WORKS, "neurons": NONE_ONLY},
    "gemma": {"heads": WORKS, "neurons": NONE_ONLY},
    "gemma2": {"heads": WORKS, "neurons": NONE_ONLY},
    "gemma3_text": {"heads": WORKS, "neurons": NONE_ONLY},
    "phi3": {"heads": NONE_ONLY, "neurons": NONE_ONLY},
    "gpt_neox": {"heads": HEAD_WIDTH, "neurons": WORKS},
    "falcon": {"heads": HEAD_WIDTH, "neurons": WORKS},
    "olmo2": {"heads": WORKS, "neurons": NONE_ONLY},
    "granite": {"heads": WORKS, "neurons": WORKS},
    "stablelm": {"heads": HEAD_WIDTH, "neurons": NONE_ONLY},
    "opt": {"heads": HEAD_WIDTH, "neurons": WORKS},
    "gpt2": {"heads": HEAD_WIDTH, "neurons": WORKS},
    "mixtral": {"heads": NONE_ONLY, "neurons": EXPERTS},
    "qwen3_moe": {"heads": WORKS, "neurons": EXPERTS},
}


def build(family: str, seed: int = 0):
    """A tiny random model of ``family`` in evaluation mode (float32, 2 blocks)."""
    kwargs = {k: v for k, v in {**COMMON, **FAMILIES[family]}.items() if v is not None}
    config = AutoConfig.for_model(family, **kwargs)
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config).eval()


def token_ids(n: int = 4, seqlen: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randint(3, COMMON["vocab_size"], (n, seqlen), generator=torch.Generator().manual_seed(seed))
