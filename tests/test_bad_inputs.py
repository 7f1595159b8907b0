"""Bad inputs stop before any job with a message that names the key, the value and what is allowed,
and no configuration value makes the workflow write outside results/.

Most cases call the checks the workflow runs when it builds its DAG (``check_config``) directly, so
dozens of them cost a second; a representative few run the real ``snakemake`` command and also check
that no job ran and nothing was written outside ``results/``.
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys

import pytest
import torch
import yaml

from conftest import REPO
from pruneflow.spec import registry
from pruneflow.spec.config import ConfigError, coerce_cli_values, duplicate_names
from pruneflow.spec.preflight import check_config
from workflow_helpers import config_errors_as_ordinary_user, snakemake, tiny_config, write_config

LONG_DOC = "The committee met on Tuesday and talked about the budget for the coming year. " * 8  # ~620 bytes


@pytest.fixture()
def base(tmp_path, tiny_model_dir):
    """A valid config for the tiny model with a small local text corpus, and a folder for files."""
    config = tiny_config(tiny_model_dir)
    docs = "\n\n".join(f"Document {i}. {LONG_DOC}" for i in range(60))
    (tmp_path / "corpus.txt").write_text(docs)
    config["corpora"]["text"] = {"source": "text", "path": str(tmp_path / "corpus.txt")}
    check_config(config, tmp_path, REPO)  # the starting point is valid
    return config, tmp_path


def _model_copy(tmp, tiny_model_dir, **config_edits):
    """A copy of the tiny model folder (weights linked) with edits to its config.json (None removes a key)."""
    folder = tmp / "model_copy"
    folder.mkdir()
    for f in tiny_model_dir.iterdir():
        (folder / f.name).symlink_to(f)
    (folder / "config.json").unlink()
    cfg = json.loads((tiny_model_dir / "config.json").read_text())
    cfg.update(config_edits)
    cfg = {k: v for k, v in cfg.items() if v is not None}  # None: the key is removed
    (folder / "config.json").write_text(json.dumps(cfg))
    return folder


def _file(tmp, name, data: bytes):
    (tmp / name).write_bytes(data)
    return str(tmp / name)


def _text_corpus(c, tmp, name, data: bytes, **extra):
    c["corpora"]["text"] = {"source": "text", "path": _file(tmp, name, data), **extra}
    c["calibration"]["corpus"] = "text"


# (id, edit(config, tmp, model_dir), regex the message must match)
CASES = [
    # ---- names: they become folders and files under results/
    ("model-dotdot", lambda c, t, m: c["models"].update({"..": c["models"].pop("tiny")}) or c.update(model=".."),
     r"models: '\.\.' is not allowed as a name: a name starts with a letter or digit"),
    ("model-parent-path", lambda c, t, m: c["models"].update({"../x": {"source": "tiny"}}), r"models: '\.\./x' is not allowed as a name"),
    ("model-slash", lambda c, t, m: c["models"].update({"a/b": {"source": "tiny"}}), r"models: 'a/b' is not allowed as a name"),
    ("model-hidden", lambda c, t, m: c["models"].update({".x": {"source": "tiny"}}), r"models: '\.x' is not allowed as a name"),
    ("model-space", lambda c, t, m: c["models"].update({"my model": {"source": "tiny"}}), r"'my model' is not allowed as a name"),
    ("model-unicode", lambda c, t, m: c["models"].update({"modèle": {"source": "tiny"}}), r"'modèle' is not allowed as a name"),
    ("model-reserved", lambda c, t, m: c["models"].update({"corpora": {"source": "tiny"}}),
     r"models: 'corpora' is not allowed as a model name: results/corpora/ holds .*reserved: benchmarks, corpora"),
    ("corpus-dotdot", lambda c, t, m: c["corpora"].update({"..": {"source": "wiki-summaries"}}), r"corpora: '\.\.' is not allowed as a name"),
    ("corpus-absolute", lambda c, t, m: c["corpora"].update({"/etc": {"source": "wiki-summaries"}}), r"corpora: '/etc' is not allowed"),
    ("study-dotdot", lambda c, t, m: c["studies"].update({"..": c["studies"]["sweep"]}), r"studies: '\.\.' is not allowed as a name"),
    ("study-slash", lambda c, t, m: c["studies"].update({"a/b": c["studies"]["sweep"]}), r"studies: 'a/b' is not allowed as a name"),
    ("study-dash-first", lambda c, t, m: c["studies"].update({"-x": c["studies"]["sweep"]}), r"studies: '-x' is not allowed"),
    ("study-number", lambda c, t, m: c["studies"].update({1: c["studies"]["sweep"]}), r"studies: 1 is not allowed as a name"),
    ("study-tilde", lambda c, t, m: c["studies"].update({"~": c["studies"]["sweep"]}), r"studies: '~' is not allowed"),
    # ---- references and plain values
    ("model-undefined", lambda c, t, m: c.update(model="gpt5"), r"model: 'gpt5' is not defined; allowed: tiny"),
    ("calib-corpus-undefined", lambda c, t, m: c["calibration"].update(corpus="c4"),
     r"calibration\.corpus: 'c4' is not defined; allowed: brown, wiki, text"),
    ("nsamples-zero", lambda c, t, m: c["calibration"].update(nsamples=0), r"calibration\.nsamples: 0 is not allowed"),
    ("nsamples-float", lambda c, t, m: c["calibration"].update(nsamples=32.0), r"calibration\.nsamples: 32\.0 is not allowed: .*not of type 'integer'"),
    ("nsamples-string", lambda c, t, m: c["calibration"].update(nsamples="32"), r"calibration\.nsamples: '32' is not allowed: .*not of type 'integer'"),
    ("seqlen-one", lambda c, t, m: c["perplexity"].update(seqlen=1), r"perplexity\.seqlen: 1 is not allowed"),
    ("device-tpu", lambda c, t, m: c["runtime"].update(device="tpu"), r"runtime\.device: 'tpu' is not allowed; allowed: cpu, cuda, auto"),
    ("bos-maybe", lambda c, t, m: c["perplexity"].update(bos="maybe"), r"perplexity\.bos: 'maybe' is not allowed; allowed: auto, True, False"),
    ("unknown-top-key", lambda c, t, m: c.update(sparsity=0.5), r"\(top level\): .*'sparsity'.*allowed keys: "),
    ("missing-studies", lambda c, t, m: c.pop("studies"), r"\(top level\): 'studies' is a required property \(missing\)"),
    ("empty-section", lambda c, t, m: c.update(calibration=None), r"calibration: None is not allowed: None is not of type 'object'"),
    # ---- keys that belong to another model or corpus source
    ("tiny-with-path", lambda c, t, m: c["models"].update(tiny={"source": "tiny", "path": "/x"}),
     r"models\.tiny: 'path' does not belong to source 'tiny' \(it would be ignored\); allowed keys: source, dtype, hidden_size"),
    ("gguf-with-id", lambda c, t, m: c["models"].update(tiny={"source": "smollm2-gguf", "id": "x"}),
     r"models\.tiny: 'id' does not belong to source 'smollm2-gguf'"),
    ("local-with-revision", lambda c, t, m: c["models"]["tiny"].update(revision="main"), r"models\.tiny: 'revision' does not belong to source 'local'"),
    ("hub-without-id", lambda c, t, m: c["models"].update(tiny={"source": "hub"}), r"models\.tiny: source 'hub' needs 'id'"),
    ("local-without-path", lambda c, t, m: c["models"].update(tiny={"source": "local"}), r"models\.tiny: source 'local' needs 'path'"),
    ("local-no-config", lambda c, t, m: c["models"]["tiny"].update(path=str(t)), r"models\.tiny\.path: .* is not a Hugging Face model folder \(no config\.json"),
    ("local-bad-config-json", lambda c, t, m: c["models"]["tiny"].update(path=str(_broken_config(t, m))),
     r"models\.tiny\.path: .*config\.json: not a readable model config"),
    ("local-no-weights", lambda c, t, m: c["models"]["tiny"].update(path=str(_without(t, m, "model.safetensors"))),
     r"models\.tiny\.path: .* has a config\.json but no weights"),
    ("local-no-tokenizer", lambda c, t, m: c["models"]["tiny"].update(path=str(_without(t, m, "tokenizer.json"))),
     r"models\.tiny\.path: .* has no tokenizer"),
    ("tiny-heads", lambda c, t, m: c["models"].update(tiny={"source": "tiny", "hidden_size": 60, "num_attention_heads": 8}),
     r"models\.tiny: hidden_size 60 is not allowed with num_attention_heads 8"),
    ("tiny-kv-heads", lambda c, t, m: c["models"].update(tiny={"source": "tiny", "num_key_value_heads": 3}),
     r"models\.tiny: num_key_value_heads 3 is not allowed: it must divide num_attention_heads 4"),
    ("text-max-documents", lambda c, t, m: c["corpora"]["text"].update(max_documents=10),
     r"corpora\.text: 'max_documents' does not belong to source 'text'"),
    ("hf-eval-fraction", lambda c, t, m: c["corpora"].update(c4={"source": "hf", "name": "c4", "eval_fraction": 0.1}),
     r"corpora\.c4: 'eval_fraction' does not belong to source 'hf'"),
    ("hf-without-name", lambda c, t, m: c["corpora"].update(c4={"source": "hf"}), r"corpora\.c4: source 'hf' needs 'name'"),
    ("text-missing-file", lambda c, t, m: c["corpora"]["text"].update(path=str(t / "nope.txt")), r"corpora\.text\.path: .*nope\.txt' does not exist"),
    ("text-path-is-folder", lambda c, t, m: c["corpora"]["text"].update(path=str(t)), r"corpora\.text\.path: .* is a folder; allowed: a readable text file"),
    ("brown-path-not-folder", lambda c, t, m: c["corpora"]["brown"].update(path=str(t / "nope")), r"corpora\.brown\.path: .* is not a folder"),
    # ---- keys that belong to another kind of study
    ("structured-with-recoveries", lambda c, t, m: c["studies"]["liar"].update(recoveries=["recon:sublayer"]),
     r"studies\.liar: 'recoveries' does not belong to a structured study \(it would be ignored\); allowed keys: kind, title"),
    ("structured-with-patterns", lambda c, t, m: c["studies"]["liar"].update(patterns=[0.5]),
     r"studies\.liar: 'patterns' does not belong to a structured study"),
    ("unstructured-with-ratios", lambda c, t, m: c["studies"]["sweep"].update(ratios=[0.2]),
     r"studies\.sweep: 'ratios' does not belong to an unstructured study"),
    ("unstructured-with-speed", lambda c, t, m: c["studies"]["sweep"].update(speed=True), r"studies\.sweep: 'speed' does not belong"),
    ("unstructured-with-recoveries", lambda c, t, m: c["studies"]["sweep"].update(recoveries=["none"]),
     r"studies\.sweep: 'recoveries' does not belong to an unstructured study"),
    ("recovery-without-recoveries", lambda c, t, m: c["studies"]["recovery"].pop("recoveries"),
     r"studies\.recovery: a recovery study needs 'recoveries'"),
    ("structured-without-ratios", lambda c, t, m: c["studies"]["liar"].pop("ratios"), r"studies\.liar: a structured study needs 'ratios'"),
    ("unstructured-without-patterns", lambda c, t, m: c["studies"]["sweep"].pop("patterns"), r"studies\.sweep: an unstructured study needs 'patterns'"),
    # ---- values spelled in artifact paths
    ("pattern-1e-10", lambda c, t, m: c["studies"]["sweep"].update(patterns=["1e-10"]),
     r"studies\.sweep\.patterns\[0\]: '1e-10' cannot be spelled exactly in an artifact path \(it would read '1e-10'\)"),
    ("pattern-7-digits", lambda c, t, m: c["studies"]["sweep"].update(patterns=[0.5, 0.1234567]),
     r"studies\.sweep\.patterns\[1\]: 0\.1234567 cannot be spelled exactly .*it would read '0\.123457'"),
    ("pattern-above-one", lambda c, t, m: c["studies"]["sweep"].update(patterns=[1.5]), r"studies\.sweep\.patterns\[0\]: 1\.5 is not allowed: .*\[0, 1\)"),
    ("pattern-nm-reversed", lambda c, t, m: c["studies"]["sweep"].update(patterns=["3:2"]), r"patterns\[0\]: '3:2' is not allowed: .*0 < N < M"),
    ("pattern-word", lambda c, t, m: c["studies"]["sweep"].update(patterns=["half"]), r"patterns\[0\]: 'half' is not allowed: .*expected a sparsity ratio"),
    ("pattern-m-not-dividing", lambda c, t, m: c["studies"]["sweep"].update(patterns=["2:3"]),
     r"studies\.sweep\.patterns\[0\]: '2:3' is not allowed for model 'tiny': M=3 does not divide its layers' input width 64"),
    ("ratio-7-digits", lambda c, t, m: c["studies"]["liar"].update(ratios=[0.2500001]),
     r"studies\.liar\.ratios\[0\]: 0\.2500001 cannot be spelled exactly .*'0\.25'"),
    ("damping-tiny", lambda c, t, m: c["studies"]["liar"].update(damping=1.0e-7), r"studies\.liar\.damping: 1e-07 cannot be spelled exactly"),
    ("ratio-one", lambda c, t, m: c["studies"]["liar"].update(ratios=[1.0]), r"studies\.liar\.ratios\[0\]: 1\.0 is not allowed"),
    ("recovery-blocks-zero", lambda c, t, m: c["studies"]["recovery"].update(recoveries=["recon:blocks:0"]),
     r"studies\.recovery\.recoveries\[0\]: 'recon:blocks:0' is not allowed: blocks:k needs k >= 1"),
    ("recovery-blocks-too-many", lambda c, t, m: c["studies"]["recovery"].update(recoveries=["recon:blocks:5"]),
     r"studies\.recovery\.recoveries\[0\]: 'recon:blocks:5' is not allowed for model 'tiny': it has 2 blocks; allowed: blocks:1 to blocks:2"),
    ("recovery-unknown", lambda c, t, m: c["studies"]["recovery"].update(recoveries=["retrain:bogus"]),
     r"studies\.recovery\.recoveries\[0\]: 'retrain:bogus' is not allowed: .*allowed: subsets"),
    ("criterion-unknown", lambda c, t, m: c["studies"]["sweep"].update(criteria=["obs"]), r"studies\.sweep\.criteria\[0\]: 'obs' is not allowed; allowed: magnitude"),
    ("structured-sparsegpt", lambda c, t, m: c["studies"]["liar"].update(criteria=["sparsegpt"]),
     r"studies\.liar\.criteria\[0\]: 'sparsegpt' is not allowed; allowed: magnitude, wanda, fluctuation"),
    ("dense-sparsegpt-no-gram", lambda c, t, m: c.update(activations={"gram": False}),
     r"studies\.dense: sparsegpt on the dense stream needs the cached Gram matrices"),
    ("zeroshot-without-tasks", lambda c, t, m: c.pop("zeroshot"), r"studies\.dense\.zeroshot: true needs zeroshot\.tasks and zeroshot\.items"),
    ("zeroshot-without-items", lambda c, t, m: c["zeroshot"].pop("items"), r"studies\.dense\.zeroshot: true needs zeroshot\.items; allowed"),
    # ---- sizes against the model
    ("calib-seqlen-above-positions", lambda c, t, m: c["calibration"].update(seqlen=4096),
     r"calibration\.seqlen: 4096 tokens is more than model 'tiny' takes \(2048 positions in its config\); allowed: 2 to 2048"),
    ("ppl-seqlen-above-positions", lambda c, t, m: c["perplexity"].update(seqlen=2049), r"perplexity\.seqlen: 2049 tokens is more than model 'tiny' takes"),
    ("speed-above-positions", lambda c, t, m: c["models"]["tiny"].update(path=str(_model_copy(t, m, max_position_embeddings=128))) or
     c["calibration"].update(seqlen=64) or c["perplexity"].update(seqlen=64),
     r"studies\.liar\.speed: 256 tokens is more than model 'tiny' takes \(128 positions"),
    ("gpt2-positions", lambda c, t, m: c["models"]["tiny"].update(path=str(_model_copy(t, m, max_position_embeddings=None, n_positions=32))),
     r"calibration\.seqlen: 64 tokens is more than model 'tiny' takes \(32 positions"),
    ("weights-truncated", lambda c, t, m: c["models"]["tiny"].update(path=str(_cut_weights(t, m))),
     r"models\.tiny\.path: .*model_copy/model\.safetensors: truncated weights file: its header lists tensors ending at byte "
     r"[\d,]+, but the file has [\d,]+ bytes; copy or download it again"),
    # ---- sizes against the data
    ("nsamples-billion", lambda c, t, m: c["calibration"].update(nsamples=1_000_000_000),
     r"calibration: nsamples × seqlen = 1000000000 × 64 = 64,000,000,000 tokens, but the calibration part of corpus 'brown' holds at most"),
    ("ppl-windows-too-many", lambda c, t, m: c["perplexity"].update(windows=10_000_000),
     r"perplexity: 10000000 windows of seqlen 64 need at least 630,000,000 tokens, but the held-out part of corpus 'wiki' holds at most"),
    ("text-nsamples-too-many", lambda c, t, m: c["calibration"].update(corpus="text", nsamples=2000),
     r"calibration: nsamples × seqlen = 2000 × 64 = 128,000 tokens, but the calibration part of corpus 'text' holds at most \d"),
    ("text-documents-too-short", lambda c, t, m: _text_corpus(c, t, "short.txt", b"\n\n".join(b"short document %d of few words" % i for i in range(50))),
     r"calibration\.seqlen: 64 is not allowed for corpus 'text': a window needs a document longer than seqlen"),
    ("text-no-heldout-documents", lambda c, t, m: c["perplexity"].update(corpus="text") or c["corpora"]["text"].update(eval_fraction=1e-9),
     r"perplexity: 4 windows of seqlen 64 need at least 252 tokens, but the held-out part of corpus 'text' holds at most 0"),
    # ---- corpus files that cannot serve
    ("text-empty", lambda c, t, m: _text_corpus(c, t, "empty.txt", b""), r"corpora\.text: .*empty\.txt: the corpus file is empty"),
    ("text-blank", lambda c, t, m: _text_corpus(c, t, "blank.txt", b"\n\n  \n\t\n"), r"corpora\.text: .*blank\.txt: the corpus file is empty \(or whitespace only\)"),
    ("text-binary", lambda c, t, m: _text_corpus(c, t, "x.bin", b"PK\x03\x04\x00\x00binary"), r"corpora\.text: .*x\.bin: not a text file \(a NUL byte at offset 4"),
    ("text-utf16", lambda c, t, m: _text_corpus(c, t, "u16.txt", (LONG_DOC * 9).encode("utf-16")),
     r"corpora\.text: .*u16\.txt: UTF-16 text \(it starts with a byte-order mark\); convert it: `iconv -f utf-16 -t utf-8"),
    ("text-latin1", lambda c, t, m: _text_corpus(c, t, "latin1.txt", (LONG_DOC + " café ").encode("latin-1") * 9),
     r"corpora\.text: .*latin1\.txt: not UTF-8 text \(byte \d+: .*iconv -f latin1 -t utf-8"),
    ("jsonl-bad-line", lambda c, t, m: c["corpora"].update(j={"source": "jsonl", "path": _file(t, "a.jsonl", b'{"text": "ok"}\n{"text": oops}\n')})
     or c["calibration"].update(corpus="j"), r"corpora\.j: .*a\.jsonl, line 2: not JSON"),
    ("jsonl-no-text", lambda c, t, m: c["corpora"].update(j={"source": "jsonl", "path": _file(t, "b.jsonl", b'{"body": "x"}\n')})
     or c["calibration"].update(corpus="j"), r"corpora\.j: .*b\.jsonl, line 1: no string field 'text'"),
    # ---- layer-wise allocation (OWL) and the per-block sensitivity study
    ("owl-with-nm", lambda c, t, m: c["studies"]["sweep"].update(allocation="owl"),
     r"studies\.sweep\.patterns\[1\]: '2:4' is not allowed with allocation owl"),
    ("owl-lambda-too-big", lambda c, t, m: c["studies"]["recovery"].update(allocation="owl", owl_lambda=0.3),
     r"studies\.recovery\.owl_lambda: 0\.3 is not allowed at sparsity 0\.5 .*allowed: 0 <= lambda < 0\.25"),
    ("owl-with-interleaved", lambda c, t, m: c["studies"]["recovery"].update(
        allocation="owl", recoveries=["none", "recon:sublayer:pruned:all:interleaved"]),
     r"studies\.recovery\.recoveries\[1\]: 'recon:sublayer:pruned:all:interleaved' is not allowed with allocation: owl"),
    ("allocation-foo", lambda c, t, m: c["studies"]["sweep"].update(allocation="foo"),
     r"studies\.sweep\.allocation: 'foo' is not allowed; allowed: " + ", ".join(registry.entries("allocation")) + "$"),
    ("allocation-list-foo", lambda c, t, m: c["studies"]["recovery"].update(allocation=["uniform", "foo"]),
     r"studies\.recovery\.allocation\[1\]: 'foo' is not allowed; allowed: " + ", ".join(registry.entries("allocation")) + "$"),
    ("owl-lambda-negative", lambda c, t, m: c["studies"]["recovery"].update(allocation="owl", owl_lambda=-0.01),
     r"studies\.recovery\.owl_lambda: -0\.01 is not allowed; allowed: a number >= 0"),
    ("owl-lambda-at-headroom", lambda c, t, m: c["studies"]["recovery"].update(allocation="owl", owl_lambda=0.25),
     r"studies\.recovery\.owl_lambda: 0\.25 is not allowed at sparsity 0\.5 .*allowed: 0 <= lambda < 0\.25$"),
    ("owl-lambda-list-one-too-big", lambda c, t, m: c["studies"]["recovery"].update(allocation="owl", owl_lambda=[0.1, 0.3]),
     r"studies\.recovery\.owl_lambda\[1\]: 0\.3 is not allowed at sparsity 0\.5 .*allowed: 0 <= lambda < 0\.25$"),
    ("owl-m-zero", lambda c, t, m: c["studies"]["recovery"].update(allocation="owl", owl_m=0),
     r"studies\.recovery\.owl_m: 0 is not allowed; allowed: a number > 0"),
    ("owl-m-negative", lambda c, t, m: c["studies"]["recovery"].update(allocation="owl", owl_m=-5),
     r"studies\.recovery\.owl_m: -5 is not allowed; allowed: a number > 0"),
    ("owl-m-list-one-zero", lambda c, t, m: c["studies"]["recovery"].update(allocation="owl", owl_m=[5, 0]),
     r"studies\.recovery\.owl_m\[1\]: 0 is not allowed; allowed: a number > 0"),
    ("sensitivity-windows", lambda c, t, m: c["studies"].update(s={"kind": "sensitivity", "criteria": ["wanda"], "patterns": [0.5], "windows": 5}),
     r"studies\.s\.windows: 5 is not allowed: .*perplexity\.windows = 4; allowed: 1 to 4"),
    ("sensitivity-nm-too-wide", lambda c, t, m: c["studies"].update(s={"kind": "sensitivity", "criteria": ["wanda"], "patterns": ["2:48"]}),
     r"studies\.s\.patterns\[0\]: '2:48' is not allowed for model 'tiny': M=48 does not divide"),
]


def _broken_config(tmp, model_dir):
    folder = _model_copy(tmp, model_dir)
    (folder / "config.json").write_text("{not json")
    return folder


def _cut_weights(tmp, model_dir):
    """A copy of the tiny model whose weights file lost its last 100 bytes (a copy cut short)."""
    folder = _model_copy(tmp, model_dir)
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    weights.unlink()
    weights.write_bytes(data[:-100])
    return folder


def _without(tmp, model_dir, name):
    folder = _model_copy(tmp, model_dir)
    (folder / name).unlink()
    return folder


@pytest.mark.parametrize("case, edit, message", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_stopped_with_a_clear_message(base, tiny_model_dir, case, edit, message):
    config, tmp = base
    config = copy.deepcopy(config)
    edit(config, tmp, tiny_model_dir)
    with pytest.raises(ConfigError) as err:
        check_config(config, tmp, REPO)
    assert re.search(message, str(err.value)), f"{case}: {err.value}"


def test_unreadable_model_folder_or_file_stops_before_any_job_naming_it(base, tiny_model_dir):
    """A weights or tokenizer file this user cannot read, or a model folder it cannot list, stops the checks before
    any job with the path and what is wrong (they once reached the model job, or raised a bare PermissionError).
    The checks run in a child that meets file permissions as any user does (the tests run as root)."""
    config, tmp = base
    cases = {  # a model copy each: what in it is unreadable ("": the folder), its mode, what the message says
        "weights": ("model.safetensors", 0o000, "the model file cannot be read"),
        "tokenizer": ("tokenizer.json", 0o000, "the model file cannot be read"),
        "closed": ("", 0o000, "the model folder cannot be read"),
        "unlisted": ("", 0o111, "the model folder cannot be read"),  # entered, not listed
    }
    configs, paths = [], []
    for case, (name, mode, _) in cases.items():
        (tmp / case).mkdir()
        folder = _model_copy(tmp / case, tiny_model_dir)
        if name:  # a file of its own, not a link to the shared model's
            data = (folder / name).read_bytes()
            (folder / name).unlink()
            (folder / name).write_bytes(data)
        os.chmod(folder / name, mode)
        paths.append(folder / name if name else folder)
        configs.append(copy.deepcopy(config))
        configs[-1]["models"]["tiny"]["path"] = str(folder)
    try:
        told = config_errors_as_ordinary_user(configs, tmp)
    finally:
        for path in paths:
            os.chmod(path, 0o755)
    for (name, mode, what), path, message in zip(cases.values(), paths, told):
        assert message.startswith(f"models.tiny.path: {path}: {what} (permission denied: owner uid {os.getuid()}, mode {mode:o}"), message
        assert message.endswith("allowed: a file this user can read (chmod a+r)" if name else "(chmod a+rx)"), message


def test_there_are_enough_cases():
    assert len(CASES) >= 60


# ---------------------------------------------------------------- the real command


def _written_outside_results(sandbox):
    """What a run left beside its working folder, or in it beside the config, Snakemake's own
    .snakemake/ and results/."""
    allowed = {"config.yaml", ".snakemake", "results"}
    return sorted([p.name for p in sandbox.iterdir() if p.name != "work"]
                  + [f"work/{p.name}" for p in (sandbox / "work").iterdir() if p.name not in allowed])


CLI_CASES = [
    ("model-dotdot", lambda c: (c["models"].update({"..": c["models"].pop("tiny")}), c.update(model="..")),
     "models: '..' is not allowed as a name"),
    ("corpus-dotdot", lambda c: (c["corpora"].update({"..": c["corpora"].pop("brown")}), c["calibration"].update(corpus="..")),
     "corpora: '..' is not allowed as a name"),
    ("study-dotdot", lambda c: c["studies"].update({"..": c["studies"].pop("sweep")}), "studies: '..' is not allowed as a name"),
    ("study-slash", lambda c: c["studies"].update({"a/b": c["studies"].pop("sweep")}), "studies: 'a/b' is not allowed as a name"),
    ("pattern-1e-10", lambda c: c["studies"]["sweep"].update(patterns=["1e-10"]), "cannot be spelled exactly in an artifact path"),
    ("nsamples-billion", lambda c: c["calibration"].update(nsamples=1_000_000_000), "calibration: nsamples × seqlen = 1000000000 × 64"),
    ("seqlen-above-positions", lambda c: c["perplexity"].update(seqlen=4096), "perplexity.seqlen: 4096 tokens is more than model 'tiny' takes"),
    ("structured-with-recoveries", lambda c: c["studies"]["liar"].update(recoveries=["recon:sublayer"]),
     "studies.liar: 'recoveries' does not belong to a structured study"),
    ("tiny-with-path", lambda c: c["models"].update(tiny={"source": "tiny", "path": "x"}), "models.tiny: 'path' does not belong to source 'tiny'"),
    ("cuda-without-gpu", lambda c: c["runtime"].update(device="cuda"), "runtime.device: 'cuda' but this machine has no CUDA device"),
    ("owl-with-nm", lambda c: c["studies"]["sweep"].update(allocation="owl"), "studies.sweep.patterns[1]: '2:4' is not allowed with allocation owl"),
    ("allocation-foo", lambda c: c["studies"]["sweep"].update(allocation="foo"), "studies.sweep.allocation: 'foo' is not allowed; allowed: uniform, owl"),
    ("owl-lambda-at-headroom", lambda c: c["studies"]["recovery"].update(allocation="owl", owl_lambda=0.25),
     "studies.recovery.owl_lambda: 0.25 is not allowed at sparsity 0.5"),
]
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
CLI_PARAMS = [pytest.param(*case, id=case[0], marks=[NO_CUDA] if "cuda" in case[0] else []) for case in CLI_CASES]


@pytest.mark.slow
@pytest.mark.parametrize("case, edit, message", CLI_PARAMS)
def test_snakemake_stops_before_any_job_and_writes_nothing_outside_results(tmp_path, tiny_model_dir, case, edit, message):
    work = tmp_path / "work"
    work.mkdir()
    config = tiny_config(tiny_model_dir)
    edit(config)
    write_config(work, config)
    proc = snakemake(work, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and message in out, out[-3000:]
    assert "rule " not in out and not (work / "results").exists()  # no job was even planned
    assert _written_outside_results(tmp_path) == []


@pytest.mark.slow
def test_yaml_syntax_error_names_file_and_line(tmp_path):
    """The workflow's own config.yaml (Snakemake's message for a --configfile names neither file nor
    line, and comes before the workflow runs: `python -m pruneflow.spec.config FILE` checks one)."""
    (tmp_path / "config.yaml").write_text("model: tiny\nmodels:\n  tiny: {source: tiny\nstudies: {}\n")
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(tmp_path), "--cores", "1", "-n"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert re.search(r"invalid configuration: config\.yaml, line 4, column \d+: not valid YAML", proc.stdout + proc.stderr)
    cli = subprocess.run([sys.executable, "-m", "pruneflow.spec.config", str(tmp_path / "config.yaml")], capture_output=True, text=True)
    assert cli.returncode == 1 and re.search(r"config\.yaml, line 4, column \d+: not valid YAML", cli.stderr)


@pytest.mark.slow
def test_nested_config_values_from_the_command_line_get_their_types(tmp_path, tiny_model_dir):
    write_config(tmp_path, tiny_config(tiny_model_dir))
    proc = snakemake(tmp_path, "--dry-run", "--config", "calibration={corpus: brown, nsamples: 8, seqlen: 32, seed: 1}",
                     "perplexity={corpus: wiki, seqlen: 32, windows: 2, bos: false}")
    assert "results/tiny/calib/brown-n8-l32-s1.safetensors" in proc.stdout
    assert "ppl-wiki-l32-w2-bosfalse.json" in proc.stdout


def test_coercion_keeps_strings_the_schema_allows():
    config = {"studies": {"s": {"patterns": ["0.5", "2:4"], "zeroshot": "true"}}, "reconstruction": {"lr": "1e-3", "max_grad_norm": "null"}}
    coerce_cli_values(config, copy.deepcopy(config))
    assert config == {"studies": {"s": {"patterns": ["0.5", "2:4"], "zeroshot": True}}, "reconstruction": {"lr": 1e-3, "max_grad_norm": None}}


@pytest.mark.slow
def test_same_study_in_two_config_files_warns(tmp_path, tiny_model_dir):
    config = tiny_config(tiny_model_dir)
    write_config(tmp_path, config)
    (tmp_path / "extra.yaml").write_text(yaml.safe_dump({"studies": {"sweep": {"criteria": ["wanda"], "patterns": [0.7]}}}))
    assert duplicate_names([tmp_path / "config.yaml", tmp_path / "extra.yaml"]) == [
        f"studies.sweep is defined in {tmp_path / 'config.yaml'} and {tmp_path / 'extra.yaml'}: Snakemake merges them key by key "
        "(the later file wins per key), so it is neither file's definition; rename one to keep both"
    ]
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(tmp_path), "--cores", "1", "-n",
           "--configfile", str(tmp_path / "config.yaml"), str(tmp_path / "extra.yaml")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and out.count(" is defined in ") == 1 and "Warning: studies.sweep is defined in" in out


@pytest.mark.slow
def test_every_output_of_a_valid_config_lies_under_results(tmp_path, tiny_model_dir):
    """Odd but valid names (dots, dashes, underscores) and every rule: all planned outputs and logs
    resolve inside results/."""
    config = tiny_config(tiny_model_dir)
    config["models"] = {"m.v-1_x": config["models"]["tiny"]}
    config["model"] = "m.v-1_x"
    config["corpora"] = {"b.r-o_wn": config["corpora"]["brown"], "w.i-k_i": config["corpora"]["wiki"]}
    config["calibration"]["corpus"], config["perplexity"]["corpus"] = "b.r-o_wn", "w.i-k_i"
    config["studies"] = {f"s.{k}-1": v for k, v in config["studies"].items()}
    write_config(tmp_path, config)
    out = snakemake(tmp_path, "--dry-run", "--forceall").stdout
    paths = [p.strip() for line in re.findall(r"^\s+(?:output|log|benchmark): (.*)$", out, re.M) for p in line.split(",")]
    assert len(paths) > 100
    results = (tmp_path / "results").resolve()
    for path in paths:
        assert (tmp_path / path).resolve().is_relative_to(results), path


def test_title_with_a_dollar_draws(tmp_path):
    import pandas as pd

    from pruneflow.report.tables import plot_ppl_vs_sparsity

    df = pd.DataFrame({"method": ["dense", "wanda"], "pattern": ["-", "0.5"], "stream": ["-", "seq"], "perplexity": [10.0, 20.0],
                       "sparsity": [0.0, 0.5], "measured_sparsity": [0.0, 0.5]})
    plot_ppl_vs_sparsity(df, str(tmp_path / "f.png"), str(tmp_path / "f.pdf"), "Costs in $ and 50% $x")
    assert (tmp_path / "f.png").stat().st_size > 1000


def test_schema_and_code_share_one_name_rule():
    from pruneflow.spec.config import NAME, SCHEMA_PATH

    assert yaml.safe_load(SCHEMA_PATH.read_text())["$defs"]["name"]["pattern"] == f"^{NAME.pattern}$"


def test_zeroshot_task_names_are_local_or_known_to_lm_eval(base, monkeypatch):
    from pruneflow.spec import zeroshot as zeroshot_names

    config, tmp = base
    config["zeroshot"]["tasks"] = ["lastword", "hellaswag"]
    check_config(config, tmp, REPO)  # found in lm-eval's task files
    monkeypatch.setattr(zeroshot_names, "_task_manager_knows", lambda name: False)  # its full index takes 25 s
    config["zeroshot"]["tasks"] = ["lastword", "hellaswg"]
    with pytest.raises(ConfigError, match=r"zeroshot\.tasks\[1\]: 'hellaswg' is neither a local task nor an lm-eval task; "
                       r"allowed: lastword, nextsentence, browncloze, or an lm-eval task name \(close: hellaswag"):
        check_config(config, tmp, REPO)


@pytest.mark.parametrize("tasks, metric, message", [
    (["lastword", "gsm8k"], {}, "zeroshot.tasks[1]: 'gsm8k' is a generate_until task (output_type generate_until, no accuracy); "
                                "only loglikelihood and multiple-choice tasks are supported"),
    (["mmlu", "bbh"], {}, "zeroshot.tasks[1]: 'bbh' holds 'bbh_cot_fewshot_boolean_expressions', which is a generate_until task"),
    (["lastword"], {"lastword": "acc_norm"}, "zeroshot.metric.lastword: 'acc_norm' is not reported by a loglikelihood task; allowed: acc"),
    (["boolq"], {"hellaswag": "acc_norm"}, "zeroshot.metric: 'hellaswag' is not a task of zeroshot.tasks"),
])
def test_zeroshot_tasks_without_an_accuracy_stop_before_any_job(base, tasks, metric, message):
    """A generation task (alone, or inside a group) and a metric a task does not report are refused before any job."""
    config, tmp = base
    config["zeroshot"] |= {"tasks": tasks, "metric": metric}
    with pytest.raises(ConfigError) as err:
        check_config(config, tmp, REPO)
    assert message in str(err.value)


def test_standard_tasks_alone_need_no_items_and_take_metrics_per_task(base):
    config, tmp = base
    config["zeroshot"] = {"tasks": ["hellaswag", "ai2_arc"], "limit": 100, "metric": {"hellaswag": "acc_norm", "arc_challenge": "acc_norm"}}
    check_config(config, tmp, REPO)  # a tag's member (arc_challenge) names a column of its own
    config["zeroshot"]["tasks"].append("lastword")
    with pytest.raises(ConfigError, match=r"studies\.dense\.zeroshot: true needs zeroshot\.items"):
        check_config(config, tmp, REPO)
