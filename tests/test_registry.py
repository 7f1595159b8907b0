"""The method registries: entries validated, hyperparameters checked, plugins found, no torch while the DAG is built."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pruneflow.spec import registry
from pruneflow.spec.registry import Entry, Param, RegistryError

SRC = str(Path(__file__).resolve().parents[1] / "src")


@pytest.fixture
def scratch_registry(monkeypatch):
    """The registry as it is, restored after the test (entries a test registers do not leak)."""
    registry.entries("criterion")  # built-ins and plugins loaded before the copy
    monkeypatch.setattr(registry, "_REGISTRY", {kind: dict(found) for kind, found in registry._REGISTRY.items()})


def test_param_check_converts_and_names_bad_values():
    p = Param("a", 0.5, float, minimum=0.0, maximum=1.0)
    assert p.check(1) == 1.0 and isinstance(p.check(1), float)  # YAML's 1 for a float
    with pytest.raises(ValueError, match=r"a = 1\.5 is not allowed; allowed: a number >= 0 and <= 1$"):
        p.check(1.5)
    with pytest.raises(ValueError, match=r"a = 'x' is not allowed; allowed: a number"):
        p.check("x")
    with pytest.raises(ValueError, match="allowed: an integer > 0$"):
        Param("n", 1, int, minimum=0, exclusive_minimum=True).check(0)
    with pytest.raises(ValueError, match="n = True is not allowed; allowed: an integer$"):
        Param("n", 1, int).check(True)  # a bool is no count
    with pytest.raises(ValueError, match="allowed: one of seq, dense"):
        Param("s", "seq", str, choices=("seq", "dense")).check("both")


@pytest.mark.parametrize("kwargs, message", [
    ({"kind": "criteria"}, "kind 'criteria' is not allowed"),
    ({"name": "my-score"}, "name 'my-score' is not allowed"),
    ({"name": "Score"}, "name 'Score' is not allowed"),
    ({"implementation": "pkg.mod.scores"}, "expected 'package.module:attribute'"),
    ({"needs": {"hessian"}}, "needs 'hessian' not allowed; allowed: calibration"),
    ({"params": (Param("a", 2.0, maximum=1.0),)}, "the default fails its own schema"),
    ({"params": (Param("a", 0.5), Param("a", 0.1))}, "distinct names"),
])
def test_entry_rejects_bad_declarations(kwargs, message):
    fields = {"kind": "criterion", "name": "score", "implementation": "pkg.mod:scores", **kwargs}
    with pytest.raises(RegistryError, match=message):
        Entry(**fields)


def test_settings_fill_defaults_and_name_unknown_keys():
    entry = registry.get("solver", "sparsegpt")
    assert entry.settings({}) == {"blocksize": 128, "percdamp": 0.01}
    assert entry.settings({"percdamp": 0.1}) == {"blocksize": 128, "percdamp": 0.1}
    assert entry.changed({"percdamp": 0.1, "blocksize": 128}) == {"percdamp": 0.1}
    with pytest.raises(RegistryError, match=r"unknown parameter 'damp'; allowed: blocksize, percdamp"):
        entry.settings({"damp": 0.1})
    with pytest.raises(RegistryError, match=r"solver 'sparsegpt': blocksize = 0 is not allowed; allowed: an integer >= 1"):
        entry.settings({"blocksize": 0})


def test_get_names_the_allowed_entries():
    with pytest.raises(RegistryError, match=r"unknown criterion 'wanda_ria'; allowed: magnitude, magnitude_row, wanda"):
        registry.get("criterion", "wanda_ria")


def test_a_name_registered_twice_by_different_code_is_refused(scratch_registry):
    registry.register(Entry("criterion", "twice", "pkg.a:scores"))
    registry.register(Entry("criterion", "twice", "pkg.a:scores"))  # the same module again (reloaded): fine
    with pytest.raises(RegistryError, match="registered twice: by pkg.a:scores and by pkg.b:scores"):
        registry.register(Entry("criterion", "twice", "pkg.b:scores"))


def test_every_builtin_loads_and_matches_its_kind():
    for kind in registry.KINDS:
        for name, entry in registry.entries(kind).items():
            impl = entry.load()
            if kind == "solver":
                assert callable(impl.prepare) and callable(impl.solve), name
            else:
                assert callable(impl), name


def write_plugin(root: Path, module: str, body: str, value: str) -> None:
    """A package as pip would install it: the module and a dist-info naming its entry point."""
    (root / f"{module}.py").write_text(textwrap.dedent(body))
    info = root / f"{module}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{registry.ENTRY_POINT_GROUP}]\n{module} = {value}\n")


def test_plugins_register_through_their_entry_point(tmp_path, monkeypatch, scratch_registry):
    write_plugin(tmp_path, "halfscore", """
        from pruneflow.spec.registry import Entry, Param, register
        def scores(weight, stats, *, power):
            return weight.abs().float() ** power
        ENTRIES = [Entry("criterion", "halfscore", "halfscore:scores", params=(Param("power", 0.5, minimum=0.0),),
                         options={"per_row": True})]
    """, "halfscore:ENTRIES")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry.load_plugins()
    entry = registry.get("criterion", "halfscore")
    assert entry.settings({}) == {"power": 0.5} and entry.load().__name__ == "scores"


def test_a_plugin_that_is_no_entry_is_named(tmp_path, monkeypatch, scratch_registry):
    write_plugin(tmp_path, "notentry", "THING = 3\n", "notentry:THING")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(RegistryError, match=r"plugin 'notentry' \(notentry:THING\): expected an Entry or a list of them, got 3"):
        registry.load_plugins()


def test_building_the_dag_imports_no_torch():
    """The Snakefile imports spec/ and every built-in entry to build its DAG: none of it may import torch."""
    code = textwrap.dedent("""
        import sys
        from pruneflow.spec import registry, naming, config, resources, preflight  # what the rules read
        for kind in registry.KINDS:
            registry.entries(kind)
        assert registry.entries("criterion") and registry.entries("solver")
        print(sorted(m for m in sys.modules if m.split(".")[0] == "torch"))
    """)
    out = subprocess.run([sys.executable, "-c", code], env={"PYTHONPATH": SRC, "PATH": ""}, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


REPO = Path(__file__).resolve().parents[1]
# Files that may spell a registered name, and why (the check below fails on any other).
NAME_LITERALS_ALLOWED = {
    "src/pruneflow/report/paper_numbers.py": {"magnitude", "wanda", "sparsegpt"},  # published numbers, keyed as the papers name them
    # bias compensation's name is also a parameter's: a LoRA layer's own bias, the config flag that gives a projection
    # a bias, a state dict's "...bias" keys
    "src/pruneflow/recover/adapters.py": {"bias"},
    "src/pruneflow/structured/prune.py": {"bias"},
}


def _string_literals(path: Path):
    """(line, value) of every string literal of a Python file (tokens, so docstrings' words are not literals), or of a
    rule file (quoted words, by a regex: Snakemake's syntax is no Python)."""
    import io
    import re
    import tokenize

    text = path.read_text()
    if path.suffix == ".py":
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            if tok.type == tokenize.STRING:
                body = tok.string.lstrip("rbuRBUfF")
                yield tok.start[0], body[3:-3] if body[:3] in ('"""', "'''") else body[1:-1]
    else:
        for number, line in enumerate(text.splitlines(), 1):
            for match in re.finditer(r"([\"'])([a-z][a-z0-9_:]*)\1", line):
                yield number, match.group(2)


def method_names() -> dict[str, set[str]]:
    """{name as code would spell it: the modules that declare it}. Pruning methods and structured criteria and repairs
    by their names (a structured criterion may share an unstructured one's: both modules own it); recovery modes as a
    config spells them (recon:block), since their bare names (block, full, matrix) are also ordinary words of other
    meanings (a memory term, a retraining subset)."""
    own: dict[str, set[str]] = {}
    for kind in (*registry.PRUNING_KINDS, "structured_criterion", "structured_repair", "reconstruction"):
        for name, e in registry.entries(kind).items():
            own.setdefault(f"recon:{name}" if kind == "reconstruction" else name, set()).add(e.implementation.partition(":")[0])
    return own


def test_no_method_name_is_spelled_outside_its_own_module():
    own = method_names()
    assert {"fluctuation", "liar", "liar_weight", "bias"} <= set(own)  # the structured kinds are checked too
    assert own["magnitude"] == {"pruneflow.methods.magnitude", "pruneflow.methods.unit_magnitude"}
    files = [*REPO.glob("src/pruneflow/**/*.py"), *REPO.glob("rules/*.smk"), *REPO.glob("scripts/*.py"), REPO / "Snakefile"]
    found = []
    for path in files:
        rel = path.relative_to(REPO).as_posix()
        module = rel.removeprefix("src/").removesuffix(".py").replace("/", ".")
        for line, value in _string_literals(path):
            if value in own and module not in own[value] and value not in NAME_LITERALS_ALLOWED.get(rel, ()):
                found.append(f"{rel}:{line}: {value!r}")
    assert not found, "method names spelled outside their own modules (read them from the registry):\n" + "\n".join(found)


@pytest.mark.slow
def test_a_plugin_criterion_and_ria_with_a_setting_run_through_a_study(tmp_path, tiny_model_dir):
    """A package installed beside PruneFlow (here: a folder on PYTHONPATH with its dist-info) adds a criterion that
    keeps the smallest weights of each row; a study names it beside RIA with a = 0.25, and the workflow prunes both;
    another prunes RIA at 2:4 with its channel permutation."""
    import pandas as pd
    import torch

    from pruneflow.core.architectures import architecture_of
    from pruneflow.core.stream import load_variant, load_variant_with_masks
    from pruneflow.prune.criteria import get_criterion, scores_for
    from pruneflow.prune.dense_stream import load_block_stats
    from pruneflow.prune.masks import make_mask, nm_mask, parse_pattern
    from pruneflow.prune.permutation import channel_permutation
    from pruneflow.spec.naming import settings_digest
    from workflow_helpers import tiny_config, write_config

    plugins = tmp_path / "site"
    plugins.mkdir()
    write_plugin(plugins, "smallest", """
        from pruneflow.spec.registry import Entry, register
        def scores(weight, stats):
            return -weight.abs().float()  # the smallest weights score highest
        ENTRY = Entry("criterion", "smallest", "smallest:scores", options={"per_row": True}, doc="keeps the smallest weights")
    """, "smallest:ENTRY")
    work = tmp_path / "work"
    work.mkdir()
    config = tiny_config(tiny_model_dir)
    config["studies"] = {"plug": {"criteria": ["smallest", {"name": "ria", "a": 0.25}], "patterns": [0.5], "stream": "dense"},
                         "perm": {"criteria": [{"name": "ria", "permutation": "lsa"}], "patterns": ["2:4"], "stream": "dense"}}
    write_config(work, config)
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(work), "--configfile",
           str(work / "config.yaml"), "--replace-workflow-config", "--cores", "2", "results/tables/plug.csv",
           "results/tables/perm.csv"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env={**os.environ, "PYTHONPATH": str(plugins)})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    dense, _ = load_variant(work / "results/tiny/dense")
    arch = architecture_of(dense)
    _, _, masks = load_variant_with_masks(work / "results/tiny/pruned/none/smallest-u0.5")
    for index, block in enumerate(arch.get_blocks(dense)):
        for name, layer in arch.block_linears(block).items():
            expected = make_mask(-arch.weight(layer).abs().float(), parse_pattern(0.5), per_row=True)
            assert torch.equal(masks[index][name], expected), (index, name)
    ria = f"ria-p{settings_digest({'a': 0.25})}-u0.5-dense"  # a non-default setting: its own path
    assert (work / "results/tiny/pruned/brown-n4-l64-s0" / ria / "masks").is_dir()
    table = pd.read_csv(work / "results/tables/plug.csv")
    assert list(table.method) == ["dense", "smallest", "ria"] and list(table.settings) == ["-", "-", "a=0.25"]
    # RIA's channel permutation at 2:4: its own path; every mask 2 of 4 in the permuted groups, not in the layer's
    permuted = f"ria-p{settings_digest({'permutation': 'lsa'})}-2of4-dense"
    _, _, masks = load_variant_with_masks(work / "results/tiny/pruned/brown-n4-l64-s0" / permuted)
    acts = work / "results/tiny/acts/brown-n4-l64-s0"
    criterion = get_criterion("ria", {"permutation": "lsa"})
    for index, block in enumerate(arch.get_blocks(dense)):
        stats = load_block_stats(acts, index, gram=False)
        for name, layer in arch.block_linears(block).items():
            order = channel_permutation(scores_for(criterion, arch.weight(layer), stats[name]), 2, 4)
            keep = masks[index][name]
            assert (keep[:, order].reshape(keep.shape[0], -1, 4).sum(-1) == 2).all(), (index, name)
            assert torch.equal(keep, nm_mask(scores_for(criterion, arch.weight(layer), stats[name]), 2, 4, order)), (index, name)
    assert pd.read_csv(work / "results/tables/perm.csv").settings.tolist() == ["-", "permutation=lsa"]


def flip_refine(weight, keep, stats, pattern, *, shift):
    """A refinement for the tests: the mask rolled along the input dimension (counts per row kept)."""
    return keep.roll(shift, dims=1)


def test_a_refinement_is_a_token_of_the_method_id_and_edits_the_mask(scratch_registry):
    import torch

    from pruneflow.core.activations import InputStats
    from pruneflow.prune.criteria import get_criterion, prune_layer
    from pruneflow.prune.masks import make_mask, parse_pattern
    from pruneflow.spec.criteria import method_criterion
    from pruneflow.spec.naming import known_parts, make_method, parse_method_id, study_methods

    registry.register(Entry("refinement", "flip", f"{__name__}:flip_refine", needs={"calibration", "input_norms"},
                            params=(Param("shift", 1, int, minimum=1),)))
    study = {"criteria": ["magnitude"], "patterns": [0.5], "refinements": ["none", "flip", {"name": "flip", "shift": 2}]}
    ids = [m.id for m in study_methods(study)]
    # magnitude reads no statistics, its refinement does: the variant gets a stream
    assert ids[:2] == ["magnitude-u0.5", "magnitude-u0.5-flip-seq"] and ids[2].startswith("magnitude-u0.5-flip-p")
    method = parse_method_id(ids[2], known_parts({"studies": {"s": study}}))
    assert method == make_method("magnitude", 0.5, "sequential", refinement={"name": "flip", "shift": 2})
    criterion = method_criterion(method)
    assert criterion.refinement.settings == {"shift": 2} and criterion.needs_calibration

    torch.manual_seed(0)
    weight = torch.randn(4, 8)
    stats = InputStats.from_tensors(1, torch.ones(8))
    keep = prune_layer(criterion, pruned := weight.clone(), stats, parse_pattern(0.5))
    expected = make_mask(weight.abs(), parse_pattern(0.5), per_row=False).roll(2, dims=1)
    assert torch.equal(keep, expected) and torch.equal(pruned, weight * expected)
    with pytest.raises(RegistryError, match=r"shift = 0 is not allowed; allowed: an integer >= 1"):
        get_criterion("magnitude", refinement=("flip", {"shift": 0}))


def flat_allocate(model, cache, sparsity, sizes):
    return {"block_sparsities": [sparsity] * len(sizes)}


def test_a_data_free_allocation_and_a_memory_term_reach_naming_and_resources(scratch_registry):
    from pruneflow.spec.naming import allocation_artifact, make_method, making_steps, pruned_variant
    from pruneflow.spec.resources import artifact_memory

    registry.register(Entry("allocation", "flat", f"{__name__}:flat_allocate"))  # reads the weights alone
    registry.register(Entry("criterion", "hungry", "pkg.hungry:scores", memory=lambda s: 10 * s["hidden"] * s["ffn"]))
    method = make_method("magnitude", 0.7, allocation="flat")
    variant = pruned_variant(method, {"corpus": "c", "nsamples": 1, "seqlen": 8, "seed": 0})
    assert variant == "pruned/none/magnitude-u0.7-flat" and allocation_artifact(method, "none") == "allocation/none/flat-u0.7"
    assert making_steps(variant)["prune"] == ["allocation/none/flat-u0.7", variant]  # no activation cache
    shape = {"hidden": 4, "ffn": 8}
    assert artifact_memory("pruned/none/hungry-u0.5", shape) == 320.0
    assert artifact_memory(variant, shape) == 0.0 and artifact_memory("structured/none/wanda-neurons0.2-none", shape) == 0.0


def test_structured_criteria_and_repairs_are_entries_with_their_needs_and_damping():
    from pruneflow.spec.naming import damped_repairs, repair_entry, structured_reconstructions

    criteria, repairs = registry.entries("structured_criterion"), registry.entries("structured_repair")
    assert {n: sorted(e.needs) for n, e in criteria.items()} == {
        "magnitude": [], "wanda": ["calibration", "input_norms"], "fluctuation": ["calibration", "channel_variance"]}
    assert {n: sorted(e.needs) for n, e in repairs.items()} == {
        "bias": ["calibration", "channel_means"], "liar": ["calibration", "gram"], "liar_weight": ["calibration", "gram"]}
    assert structured_reconstructions() == ("none", "bias", "liar", "liar_weight") and damped_repairs() == ("liar", "liar_weight")
    liar = registry.get("structured_repair", "liar")
    assert liar.settings({}) == {"damping": "auto"} and liar.settings({"damping": 0}) == {"damping": 0.0}
    for bad in (-0.1, "often", True):
        with pytest.raises(RegistryError, match=r"damping = .* is not allowed; allowed: a number >= 0 or auto$"):
            liar.settings({"damping": bad})
    assert repair_entry("none") is None


def test_a_bad_structured_name_is_named_with_the_allowed_ones():
    from pruneflow.spec.naming import parse_structured_id, parse_structured_reconstruction, repair_entry
    from pruneflow.structured.prune import StructuredError, check_criterion

    with pytest.raises(RegistryError, match=r"unknown structured_criterion 'taylor'; allowed: magnitude, wanda, fluctuation$"):
        registry.get("structured_criterion", "taylor")
    with pytest.raises(StructuredError, match=r"unknown structured criterion 'taylor'; allowed: magnitude, wanda, fluctuation$"):
        check_criterion("taylor")
    with pytest.raises(RegistryError, match=r"unknown reconstruction 'adam'; allowed: none, bias, liar, liar_weight$"):
        repair_entry("adam")
    with pytest.raises(ValueError, match=r"reconstruction 'bias:0\.1': allowed none, bias, liar, liar_weight; liar and "
                                         r"liar_weight may name their damping after a colon \(liar:0, liar:0\.3, liar:auto\)"):
        parse_structured_reconstruction("bias:0.1")
    with pytest.raises(ValueError, match=r"damping '-1' is not allowed; allowed: a number >= 0 or auto"):
        parse_structured_reconstruction("liar:-1")
    with pytest.raises(ValueError, match=r"expected <criterion>-<target><ratio>-<none\|bias\|liar<damping>\|liar_weight<damping>>"):
        parse_structured_id("fluctuation-neurons0.2-liar")  # a damped repair spells its damping


def half_bias_fit(stats, keep, removed, *, consume=False):
    """A repair for the tests: half of bias compensation's intercept."""
    return None, 0.5 * stats.mean.cpu()[removed]


def test_a_structured_repair_is_one_entry_and_reaches_ids_memory_and_pruning(scratch_registry):
    import torch

    from pruneflow.core.tiny import build_tiny_model
    from pruneflow.spec.export_names import export_name
    from pruneflow.spec.naming import parse_structured_id, structured_repairs, structured_variants
    from pruneflow.spec.resources import pruning_kind
    from pruneflow.structured.prune import prune_structured

    registry.register(Entry("structured_repair", "halfbias", f"{__name__}:half_bias_fit", needs={"calibration", "channel_means"}))
    study = {"kind": "structured", "criteria": ["magnitude"], "ratios": [0.5], "reconstructions": ["none", "halfbias", "liar:0"]}
    calib = {"corpus": "c", "nsamples": 4, "seqlen": 16, "seed": 0}
    assert structured_variants(study, calib) == ["dense", "structured/none/magnitude-neurons0.5-none",
                                                 "structured/c-n4-l16-s0/magnitude-neurons0.5-halfbias",
                                                 "structured/c-n4-l16-s0/magnitude-neurons0.5-liar0"]
    assert parse_structured_id("magnitude-neurons0.5-halfbias").reconstruction == "halfbias"
    assert export_name("structured/c-n4-l16-s0/magnitude-neurons0.5-halfbias", calib) == "magnitude-neurons-0.5-halfbias"
    assert pruning_kind("magnitude-neurons0.5-halfbias") == "prune_structured"  # no Gram sums held
    assert pruning_kind("magnitude-neurons0.5-liar0") == "prune_structured_liar"

    ids = torch.randint(2, 258, (4, 16), generator=torch.Generator().manual_seed(0))
    outputs = {}
    for repair in ("bias", "halfbias"):
        model, _ = build_tiny_model()
        prune_structured(model, ids, "neurons", 0.5, "magnitude", repair, batch_size=4)
        outputs[repair] = model.model.layers[0].mlp.down_proj
    assert torch.equal(outputs["bias"].weight, outputs["halfbias"].weight)
    assert outputs["bias"].bias.abs().max() > 0 and torch.equal(outputs["halfbias"].bias, 0.5 * outputs["bias"].bias)

    registry.register(Entry("structured_repair", "tuned", f"{__name__}:half_bias_fit", params=(Param("alpha", 1.0),)))
    with pytest.raises(RegistryError, match=r"structured_repair 'tuned' .*allowed: damping or none"):
        structured_repairs()
