import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, OPTConfig, OPTForCausalLM

from pruneflow.core.architectures import architecture_of


def test_llama_linears_in_forward_order(tiny):
    model, _ = tiny
    arch = architecture_of(model)
    block = arch.get_blocks(model)[0]
    shapes = {name: tuple(arch.weight(layer).shape) for name, layer in arch.block_linears(block).items()}
    assert list(shapes) == [
        "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
        "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj",
    ]
    assert shapes["self_attn.k_proj"] == (32, 64)  # 2 KV heads x head_dim 16
    assert shapes["mlp.down_proj"] == (64, 128)


def test_opt_and_gpt2_are_described():
    opt = OPTForCausalLM(OPTConfig(hidden_size=32, ffn_dim=64, num_hidden_layers=2, num_attention_heads=2, vocab_size=100, word_embed_proj_dim=32))
    arch = architecture_of(opt)
    assert len(arch.get_blocks(opt)) == 2
    assert tuple(arch.weight(arch.block_linears(arch.get_blocks(opt)[0])["fc2"]).shape) == (32, 64)

    gpt2 = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=100))
    arch = architecture_of(gpt2)
    c_fc = arch.block_linears(arch.get_blocks(gpt2)[0])["mlp.c_fc"]
    w = arch.weight(c_fc)
    assert tuple(w.shape) == (128, 32)  # [out, in] although Conv1D stores [in, out]
    with torch.no_grad():
        w[0, 0] = 0.0
    assert c_fc.weight[0, 0] == 0.0  # the view writes through


def test_a_model_is_needed_not_a_config(tiny):
    model, _ = tiny
    with pytest.raises(TypeError, match="check_supported"):
        architecture_of(model.config)
    assert architecture_of(model) is architecture_of(model)  # found once per model object


def test_blocks_detached_restores_blocks(tiny):
    model, _ = tiny
    arch = architecture_of(model)
    blocks = arch.get_blocks(model)
    with arch.blocks_detached(model):
        assert len(arch.get_blocks(model)) == 0
    assert arch.get_blocks(model) is blocks
