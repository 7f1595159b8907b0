"""Inputs as they were read (issue 39): a job notes each file it reads and fails if one changes before it ends;
every manifest records the sources read, the library's version and its code; the rerun triggers beside
Snakemake's modification times (pruneflow.spec.triggers) follow a source's contents and the code a step runs."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from pruneflow import __version__
from pruneflow.core.artifacts import ArtifactError, artifact_folder, load_json, save_json, sidecar
from pruneflow.core.models import load_source
from pruneflow.core.provenance import MANIFEST, InputChangedError, code_digest, file_checksum, loaded_modules, record_name
from pruneflow.core.runtime import job
from pruneflow.core.writer import write_full_variant
from pruneflow.data.corpora import corpus_splits
from pruneflow.data.jsonl import load_texts, save_texts
from pruneflow.spec.triggers import Triggers, changed_since

DOCS = "\n\n".join(f"Document {i}. The committee met on Tuesday and talked about the budget." for i in range(12))


@pytest.fixture()
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(DOCS)
    return path


def _spec(path) -> dict:
    return {"source": "text", "path": str(path), "eval_fraction": 0.5}


def test_a_corpus_appended_while_its_job_reads_it_fails_the_job_and_nothing_is_put_in_place(tmp_path, corpus):
    out = tmp_path / "results" / "calib.jsonl"
    with pytest.raises(InputChangedError, match=rf"{corpus}: {len(DOCS)} bytes when read, {len(DOCS) + 17} bytes"):
        with job(str(tmp_path / "job.log")):
            splits = corpus_splits(_spec(corpus))
            with corpus.open("a") as f:
                f.write("\n\nA new document.")
            save_texts(out, splits["calib"])
    assert not out.exists() and "InputChangedError" in (tmp_path / "job.log").read_text()
    with pytest.raises(InputChangedError, match=str(corpus)):  # after the last write: the job's end finds it
        with job(str(tmp_path / "job.log")):
            corpus_splits(_spec(corpus))
            corpus.write_text(DOCS)


def test_a_local_models_config_edited_during_the_model_job_fails_it(tmp_path, tiny_model_dir):
    folder = shutil.copytree(tiny_model_dir, tmp_path / "model")
    config = folder / "config.json"
    with pytest.raises(InputChangedError, match=rf"{config}: .*other contents now"):
        with job(str(tmp_path / "job.log")):
            model, tok = load_source({"source": "local", "path": str(folder), "dtype": "float32"})
            config.write_text(config.read_text().replace('"rms_norm_eps": 1e-06', '"rms_norm_eps": 1e-05'))
            with artifact_folder(tmp_path / "dense") as out:
                write_full_variant(out, model, tok, {"variant": "dense"})
    assert not (tmp_path / "dense").exists()


def test_an_evaluation_text_replaced_while_a_job_reads_it_fails_the_job(tmp_path):
    docs = tmp_path / "eval.jsonl"
    save_texts(docs, ["old text"])
    with pytest.raises(InputChangedError, match=str(docs)):
        with job(str(tmp_path / "job.log")):
            load_texts(docs)
            save_texts(docs, ["new text"])  # another run rewrote it: checksum and manifest agree, but not with what was read


def test_a_source_only_touched_passes_and_the_manifest_records_it_as_read(tmp_path, corpus):
    before = os.stat(corpus)
    out = tmp_path / "calib.jsonl"
    with job(str(tmp_path / "job.log")):
        corpus_splits(_spec(corpus))
        os.utime(corpus, ns=(before.st_atime_ns + 10**9, before.st_mtime_ns + 10**9))  # same bytes, new times
        save_texts(out, ["x"])
    made = json.loads(sidecar(out).read_text())["made_by"]
    assert made["sources"] == {record_name(corpus): {"bytes": len(DOCS), "mtime_ns": before.st_mtime_ns,
                                                         "xxh3_128": file_checksum(corpus)}}
    assert made["pruneflow"] == __version__ and made["code"] == code_digest(loaded_modules())
    assert "pruneflow/core/provenance.py" in {str(p).split("src/")[-1] for p in loaded_modules()}
    with job(str(tmp_path / "job.log")):  # an artifact's own reads are not sources
        load_texts(out)
        save_json(tmp_path / "r.json", {})
    assert json.loads(sidecar(tmp_path / "r.json").read_text())["made_by"]["sources"] == {}
    with artifact_folder(tmp_path / "folder") as folder:
        (folder / "a").write_text("a")
    assert json.loads((tmp_path / "folder" / MANIFEST).read_text())["made_by"]["code"] == made["code"]


def test_outside_a_job_nothing_is_noted(tmp_path, corpus):
    corpus_splits(_spec(corpus))
    corpus.write_text("changed")
    save_json(tmp_path / "r.json", {"a": 1})
    assert load_json(tmp_path / "r.json") == {"a": 1}


def test_a_damaged_result_read_in_a_job_fails_with_the_artifact_error_not_a_change(tmp_path):
    docs = tmp_path / "eval.jsonl"
    save_texts(docs, ["text"])
    docs.write_text('{"text": "tExt"}\n')
    with pytest.raises(ArtifactError, match=rf"delete {docs} and rerun"), job(str(tmp_path / "job.log")):
        load_texts(docs)


# ---------------------------------------------------------------- triggers: sources


def test_source_checksums_follow_contents_even_with_the_modification_time_set_back(tmp_path, corpus):
    triggers = Triggers(tmp_path / "cache.json")
    first = triggers.source_checksums([corpus])
    assert first == {str(corpus): file_checksum(corpus)}
    st = os.stat(corpus)
    corpus.write_text(DOCS.replace("Tuesday", "Thursday"))  # same size
    os.utime(corpus, ns=(st.st_atime_ns, st.st_mtime_ns))  # and the old time: Snakemake sees nothing
    fresh = Triggers(tmp_path / "cache.json")  # another plan, from the cache on disk
    assert fresh.source_checksums([corpus])[str(corpus)] == file_checksum(corpus) != first[str(corpus)]
    assert fresh.source_checksums([tmp_path / "gone.txt"]) == {str(tmp_path / "gone.txt"): "missing"}


def test_the_cache_spares_reading_an_unchanged_source_again(tmp_path, corpus, monkeypatch):
    Triggers(tmp_path / "cache.json").source_checksums([corpus])
    monkeypatch.setattr("pruneflow.spec.triggers.file_checksum", lambda p: pytest.fail(f"{p} was read again"))
    assert Triggers(tmp_path / "cache.json").source_checksums([corpus])[str(corpus)] == file_checksum(corpus)


def test_changed_since_names_the_sources_an_artifact_read_that_differ_now(tmp_path, corpus):
    out = tmp_path / "calib.jsonl"
    with job(str(tmp_path / "job.log")):
        corpus_splits(_spec(corpus))
        save_texts(out, ["x"])
    assert changed_since(out, {str(corpus): file_checksum(corpus)}) == []
    assert changed_since(out, {str(corpus): "0" * 32}) == [str(corpus)]
    assert changed_since(tmp_path / "never-made.jsonl", {str(corpus): "0" * 32}) == []


# ---------------------------------------------------------------- triggers: code


def _package(root, **modules):
    for name, text in modules.items():
        path = root / "pruneflow" / f"{name.replace('.', '/')}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_a_scripts_code_is_the_modules_it_imports_and_theirs_but_not_their_comments(tmp_path):
    src = _package(tmp_path / "src", __init__="", **{
        "core/__init__": "",
        "core/a": '"""Module a."""\nfrom pruneflow.core import b\n\n\ndef f():\n    """Doc."""\n    return b.g()  # why\n',
        "core/b": "def g():\n    from pruneflow.core.c import h  # lazily\n    return h()\n",
        "core/c": "def h():\n    return 1\n",
        "core/other": "X = 1\n",
    })
    script = tmp_path / "script.py"
    script.write_text("from pruneflow.core.a import f\nprint(f())\n")

    def code():
        return Triggers(tmp_path / "cache.json").script_code(script, src)

    first = code()
    a, c = src / "pruneflow/core/a.py", src / "pruneflow/core/c.py"
    a.write_text(a.read_text().replace("# why", "# a longer comment").replace('"""Doc."""', '"""Another doc."""'))
    (src / "pruneflow/core/other.py").write_text("X = 2\n")  # imported by nothing the script runs
    assert code() == first
    c.write_text("def h():\n    return 2\n")  # imported inside a function of an imported module
    assert code() != first
