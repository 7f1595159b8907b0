"""The method registries: entries validated, hyperparameters checked, plugins found, no torch while the DAG is built."""

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
    with pytest.raises(ValueError, match=r"a = 1\.5 is not allowed; allowed: 0 ≤ float ≤ 1"):
        p.check(1.5)
    with pytest.raises(ValueError, match=r"a = 'x': expected a float"):
        p.check("x")
    with pytest.raises(ValueError, match="expected a int"):
        Param("n", 1, int).check(True)  # a bool is no count
    with pytest.raises(ValueError, match="allowed: seq, dense"):
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
    with pytest.raises(RegistryError, match=r"solver 'sparsegpt': blocksize = 0 is not allowed; allowed: 1 ≤ int"):
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
