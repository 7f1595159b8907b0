"""The documentation: the MkDocs site builds with --strict (links, anchors, nav), the README stays short, the
configuration reference is generated from the schema (every key described, x-defaults as the code has them),
and every figure under docs/figures/ is shown by a page."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys

from conftest import REPO
from pruneflow.spec import reference


def _mkdocs(config, site) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # Material's banner about its successor
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)],
                          capture_output=True, text=True, timeout=300, env=env)


def test_site_builds_strict_and_offline_with_a_search_index(tmp_path):
    proc = _mkdocs(REPO / "mkdocs.yml", tmp_path / "site")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    index = json.loads((tmp_path / "site" / "search" / "search_index.json").read_text())
    text = " ".join(doc["text"] for doc in index["docs"])
    assert all(word in text for word in ("owl_lambda", "liar_weight", "interleaved", "CorpusError"))
    html = "".join(p.read_text() for p in (tmp_path / "site").rglob("*.html"))
    assert not re.search(r'<(?:link|script)[^>]+(?:href|src)="https?://', html), "an external asset: the site must read offline"


def test_strict_build_fails_on_a_broken_link(tmp_path):
    shutil.copytree(REPO / "docs", tmp_path / "docs")
    shutil.copy(REPO / "mkdocs.yml", tmp_path / "mkdocs.yml")
    with open(tmp_path / "docs" / "limits.md", "a") as page:
        page.write("\nSee [nowhere](no-such-page.md).\n")
    proc = _mkdocs(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert proc.returncode != 0 and "no-such-page.md" in proc.stdout + proc.stderr


def test_readme_is_at_most_200_lines():
    assert len((REPO / "README.md").read_text().splitlines()) <= 200


def test_every_schema_key_has_a_description():
    schema = reference.load_schema()
    assert reference.missing_descriptions(schema) == []
    broken = copy.deepcopy(schema)
    del broken["properties"]["perplexity"]["properties"]["bos"]["description"]
    del broken["properties"]["studies"]["additionalProperties"]["properties"]["owl_m"]["description"]
    assert reference.missing_descriptions(broken) == ["perplexity.bos", "studies.<name>.owl_m"]


def test_configuration_page_is_the_schema_rendered():
    page = (REPO / "docs" / "configuration.md").read_text()
    assert page == reference.render(reference.load_schema()), "stale: run python -m pruneflow.spec.reference --write"
    assert "| `studies.<name>.owl_lambda` | number or list of number | `0.08` † |" in page


def test_methods_page_tables_are_the_registry():
    page = (REPO / "docs" / "methods.md").read_text()
    assert reference.METHODS_BEGIN in page and reference.METHODS_END in page
    assert page == reference.methods_page(page), "stale: run python -m pruneflow.spec.reference --write"
    assert "| `ria` | relative importance" in page and "`blocksize` = `128`" in page


def test_add_a_method_shows_the_ria_module_as_it_is():
    """The worked example on docs/add-a-method.md is the module's code (from its first import on)."""
    page = (REPO / "docs" / "add-a-method.md").read_text()
    code = (REPO / "src/pruneflow/methods/ria.py").read_text()
    shown = page.split("```python\n", 1)[1].split("```", 1)[0]
    assert shown.rstrip() == code[code.index("from pruneflow"):code.index("ROW_ENTRY")].rstrip()


def test_x_defaults_are_the_codes_defaults():
    """The reference's † defaults are what the code uses when a key is left out."""
    from pruneflow.recover.adapters import AdapterConfig
    from pruneflow.recover.run import RECON_DEFAULTS
    from pruneflow.recover.train import TrainConfig
    from pruneflow.spec import registry
    from pruneflow.spec.model_config import DEFAULT_DTYPE, TINY_DEFAULTS
    from pruneflow.spec.naming import DEFAULT_DAMPING, SENSITIVITY_WINDOWS

    props = reference.load_schema()["properties"]

    def x_defaults(node):
        return {k: v["x-default"] for k, v in node["properties"].items() if "x-default" in v}

    adapter = {k: getattr(AdapterConfig(), k) for k in ("rank", "alpha", "dropout")}
    recon = {**TrainConfig().to_dict(), **RECON_DEFAULTS, **adapter}
    retrain = {**TrainConfig.retraining().to_dict(), **adapter}
    assert x_defaults(props["reconstruction"]) == {k: recon[k] for k in props["reconstruction"]["properties"]}
    assert x_defaults(props["retraining"]) == {k: retrain[k] for k in props["retraining"]["properties"]}
    model = x_defaults(props["models"]["additionalProperties"])
    assert model == {**TINY_DEFAULTS, "dtype": DEFAULT_DTYPE}
    study = x_defaults(props["studies"]["additionalProperties"])
    owl = registry.get("allocation", "owl")
    assert {k: study[k] for k in owl.options["study_keys"]} == {k: owl.defaults[p] for k, p in owl.options["study_keys"].items()}
    assert study["windows"] == SENSITIVITY_WINDOWS and study["damping"] == DEFAULT_DAMPING


def test_every_figure_is_shown_by_a_page():
    pages = "".join(p.read_text() for p in [REPO / "README.md", *(REPO / "docs").rglob("*.md")])
    stale = [f.name for f in (REPO / "docs" / "figures").glob("*") if f"figures/{f.name}" not in pages]
    assert not stale, f"figures no page shows (delete them): {stale}"
