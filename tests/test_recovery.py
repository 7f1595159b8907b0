"""Recovery modes as registry entries (pruneflow.spec.recovery): the ids of existing variants kept, parsed back, a
new granularity added as one module, and the architecture found once per model while recovering."""

import ast
import copy
import re
import sys
import textwrap

import pytest
import torch

from conftest import REPO
from pruneflow.core.stream import ModelStream
from pruneflow.core.tiny import build_tiny_model
from pruneflow.prune.criteria import get_criterion
from pruneflow.prune.masks import parse_pattern
from pruneflow.prune.sequential import prune_model
from pruneflow.recover.run import recover
from pruneflow.report.tables import recovery_optimiser
from pruneflow.spec import registry
from pruneflow.spec.naming import parse_recovery, parse_recovery_id, recovery_id_pattern, recovery_settings
from pruneflow.spec.recovery import granularity_problem
from pruneflow.spec.resources import job_peaks, recovery_kind

CALIB = torch.randint(2, 258, (4, 16), generator=torch.Generator().manual_seed(0))
SETTINGS = {"reconstruction": {"lr": 1e-3, "steps": 0, "batch_size": 2, "damping": 0.01, "targets": "same", "rank": 8, "loss": "mse"},
            "retraining": {"lr": 5e-4, "batch_size": 1, "grad_accum": 2, "rank": 16, "alpha": 32.0, "seed": 0}}
# Ids computed before recovery modes moved into the registry: existing artifacts keep their paths. Memory kinds as
# the benchmark files and bench/results/scale.json name them.
PINNED = [
    ("recon:matrix", SETTINGS, "recon-matrix-pruned-all-b4a51fd7", "recon"),
    ("recon:matrix-adam", SETTINGS, "recon-matrix-adam-pruned-all-c7a23ba3", "recon"),
    ("recon:sublayer:dense", SETTINGS, "recon-sublayer-dense-all-fc0ab64f", "recon"),
    ("recon:block:pruned:norms", SETTINGS, "recon-block-pruned-norms-37e25142", "recon"),
    ("recon:blocks:3:dense:norms+masklora", SETTINGS, "recon-blocks3-dense-norms+masklora-ae06bfe7", "recon"),
    ("recon:full:pruned:norms+lora", SETTINGS, "recon-full-pruned-norms+lora-ccd898bc", "recon_full"),
    ("recon:sublayer:dense:interleaved", SETTINGS, "recon-sublayer-dense-all-interleaved-1be3cf6e", "recon"),
    ("retrain:norms+masklora", SETTINGS, "retrain-norms+masklora-5d9d6694", "retrain_adapter"),
    ("retrain:full", SETTINGS, "retrain-full-054c061f", "retrain_full"),
    ("recon:sublayer", {}, "recon-sublayer-pruned-all-314b3557", "recon"),
    ("retrain:norms", {}, "retrain-norms-87332e4c", "retrain"),
]


@pytest.mark.parametrize("spec, config, token, kind", PINNED)
def test_recovery_ids_are_those_made_before_the_registry_and_parse_back(spec, config, token, kind):
    rec = parse_recovery(spec)
    assert rec.token(recovery_settings(rec, config)) == token
    assert parse_recovery_id(token) == rec
    assert re.fullmatch(recovery_id_pattern(), token)
    assert recovery_kind(token) == kind


def test_a_granularitys_parameters_are_checked_by_its_entry():
    assert granularity_problem("blocks:3") is None
    assert granularity_problem("blocks:0") == "blocks:k needs k >= 1"
    with pytest.raises(ValueError, match="granularity 'blocks' is not allowed; allowed: matrix, matrix-adam, sublayer, block, blocks:k, full"):
        parse_recovery("recon:blocks")


@pytest.fixture
def scratch_registry(monkeypatch):
    """The registry as it is, restored after the test (entries a test registers do not leak)."""
    registry.entries("reconstruction")
    monkeypatch.setattr(registry, "_REGISTRY", {kind: dict(found) for kind, found in registry._REGISTRY.items()})


ATTENTION_ONLY = '''
    """recon:attention — only the attention sublayer of each block is reconstructed, the MLPs are left as pruned."""
    from pruneflow.spec.recovery import RECONSTRUCTION, UNIT_KEYS, recovery_entry
    from pruneflow.spec.registry import register


    def reconstruct(ctx, calib_ids):
        from pruneflow.recover.reconstruct import Unit, reconstruct_units

        return reconstruct_units(ctx, calib_ids, [Unit(f"{i}.attn", [i], "attn") for i in range(ctx.p.num_blocks)])


    ENTRY = register(recovery_entry(
        RECONSTRUCTION, "attention", "attention_only:reconstruct", settings=UNIT_KEYS,
        memory={"recon_attention": lambda t: t["outer"] + 2 * t["block"] + 3 * t["hidden32"]},
    ))
'''


def test_a_new_granularity_is_one_module_and_its_entry(tmp_path, monkeypatch, scratch_registry):
    (tmp_path / "attention_only.py").write_text(textwrap.dedent(ATTENTION_ONLY))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "attention_only", raising=False)
    __import__("attention_only")

    rec = parse_recovery("recon:attention:dense")
    settings = recovery_settings(rec, {"reconstruction": {"lr": 1e-3, "damping": 0.5}})
    token = rec.token(settings)
    assert settings == {"recovery": "recon:attention:dense:all", "lr": 1e-3}  # its keys only: no damping
    assert parse_recovery_id(token) == rec and re.fullmatch(recovery_id_pattern(), token)
    assert recovery_kind(token) == "recon_attention"
    shape = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 258}
    config = {"calibration": {"nsamples": 4, "seqlen": 16}, "perplexity": {"seqlen": 16}, "runtime": {"eval_batch_size": 1}}
    peaks = job_peaks(shape, "float32", config)
    assert 0 < peaks["recon_attention"]["device"] < peaks["recon"]["device"]  # no MLP trained: no MLP's Adam state
    assert recovery_optimiser({"recovery": rec.spec, "settings": settings}) == "adamw (mse)"

    dense, _ = build_tiny_model()
    pruned = copy.deepcopy(dense)
    masks = dict(prune_model(pruned, get_criterion("magnitude"), parse_pattern(0.5)))
    before = copy.deepcopy(pruned)
    summary = recover(dense, pruned, masks, CALIB, rec, {"lr": 1e-3, "steps": 2})
    assert [u["unit"] for u in summary["units"]] == ["0.attn", "1.attn"]
    for name, p in pruned.named_parameters():
        changed = not torch.equal(p, before.get_parameter(name))
        assert changed == ("self_attn" in name or "input_layernorm" in name), name  # the attention and its norm only
    for i, block in enumerate(pruned.model.layers):
        for name, keep in masks[i].items():
            assert (block.get_submodule(name).weight[~keep] == 0).all(), (i, name)


@pytest.mark.parametrize("spec", ["recon:sublayer", "recon:matrix", "recon:full", "retrain:norms+masklora"])
def test_recovering_the_jobs_streams_finds_no_architecture_again(monkeypatch, spec):
    """The job's streams found each model's architecture when they opened it; recover() hands it down."""
    dense, _ = build_tiny_model()
    pruned = copy.deepcopy(dense)
    masks = dict(prune_model(pruned, get_criterion("magnitude"), parse_pattern(0.5)))
    rec = parse_recovery(spec)
    d, p = ModelStream.wrap(dense), ModelStream.wrap(pruned)
    calls = []
    for name, module in list(sys.modules.items()):
        for function in ("architecture_of", "find_blocks") if name.startswith("pruneflow") else ():
            if callable(getattr(module, function, None)):
                found = getattr(module, function)
                monkeypatch.setattr(module, function, lambda *a, _f=found, _n=f"{name}.{function}", **k: calls.append(_n) or _f(*a, **k))
    recover(None if rec.whole_model else d, p, masks, CALIB, rec, {"steps": 1, "rank": 2})
    assert calls == []


def test_full_reconstruction_and_perp_retraining_are_siblings():
    """Both train through recover/whole_model.py; neither imports the other's module."""
    def imports(path):
        tree = ast.parse((REPO / "src" / "pruneflow" / path).read_text())
        return {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}

    full = imports("methods/recon_full.py") | imports("recover/reconstruct.py")
    assert "pruneflow.recover.whole_model" in full and "pruneflow.recover.retrain" not in full
    assert "pruneflow.recover.whole_model" in imports("recover/retrain.py")
    assert not {"pruneflow.recover.reconstruct", "pruneflow.methods.recon_full"} & imports("recover/retrain.py")
