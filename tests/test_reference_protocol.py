"""The Wanda/SparseGPT reference data protocol (calibration.protocol / perplexity.protocol: reference),
checked against independent implementations written here from the reference code's description
(locuslab/wanda lib/data.py get_c4 / get_wikitext2, lib/eval.py eval_ppl_wikitext), and PruneFlow's own
protocol guarded against change."""

from __future__ import annotations

import gzip
import io
import json
import os
import random

import pyarrow.parquet as pq
import pytest
import torch
import torch.nn as nn
from safetensors import safe_open

from pruneflow.core.tiny import build_tiny_model, byte_tokenizer
from pruneflow.data.calibration import CalibrationError, reference_windows, sample_windows
from pruneflow.data.corpora import CorpusError, corpus_splits
from pruneflow.evaluate.perplexity import eval_windows, perplexity, protocol_windows, reference_eval_windows
from pruneflow.spec.config import ConfigError, coerce_cli_values, validate_config
from pruneflow.spec.naming import calib_id, parse_calib_id, parse_ppl_name, ppl_name
from pruneflow.spec.preflight import perplexity_seqlen
from workflow_helpers import snakemake, tiny_config, write_config

WORDS = "the of and a to in is was he for it with as his on be at by had are but from or have an they which one".split()


def rows_with_empty_ones(n: int = 60, seed: int = 1) -> list[str]:
    """WikiText-like rows: text of 0 to 400 characters, with empty and whitespace rows among them."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        if i % 5 == 0:
            rows.append("")
        elif i % 7 == 0:
            rows.append(" \n")
        else:
            rows.append(" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 80))) + " \n")
    return rows


@pytest.fixture(scope="module")
def bos_tok():
    tok = byte_tokenizer(add_bos=True)
    assert tok("ab")["input_ids"][0] == tok.bos_token_id  # the LLaMA habit the reference relies on
    return tok


# ---------------------------------------------------------------- (a) token ids equal the reference's procedure
def test_tiny_tokenizer_adds_a_bos_only_when_asked():
    plain, with_bos = byte_tokenizer(), byte_tokenizer(add_bos=True)
    assert plain("ab")["input_ids"] == plain("ab", add_special_tokens=False)["input_ids"] == [66, 67]
    assert with_bos("ab")["input_ids"] == [0, 66, 67] and with_bos("ab", add_special_tokens=False)["input_ids"] == [66, 67]


def test_wikitext_windows_equal_the_reference_procedure(bos_tok):
    rows, seqlen = rows_with_empty_ones(), 64
    # the reference: every row joined by "\n\n", one tokenizer call with special tokens, numel // seqlen windows
    testenc = bos_tok("\n\n".join(rows), return_tensors="pt").input_ids
    nsamples = testenc.numel() // seqlen
    expected = torch.cat([testenc[:, i * seqlen : (i + 1) * seqlen] for i in range(nsamples)])

    got = reference_eval_windows(rows, bos_tok, seqlen, 0)
    assert torch.equal(got, expected)
    assert got[0, 0] == bos_tok.bos_token_id and (got[1:, 0] != bos_tok.bos_token_id).all()  # one BOS, at the start
    assert testenc.numel() % seqlen and got.numel() < testenc.numel()  # a partial last window existed and is dropped
    assert torch.equal(reference_eval_windows(rows, bos_tok, seqlen, 3), expected[:3])
    assert torch.equal(protocol_windows(rows, bos_tok, {"seqlen": seqlen, "windows": 0, "protocol": "reference"}), expected)
    # the empty rows are in the stream: PruneFlow's own protocol (blank rows skipped) is another token stream
    own = eval_windows(rows, bos_tok, seqlen, 0, False)
    assert own.shape != got.shape or not torch.equal(own, got)


def test_c4_samples_equal_the_reference_sampler(bos_tok):
    rows, nsamples, seqlen, seed = rows_with_empty_ones(80, seed=2), 12, 64, 3
    state = random.getstate()
    try:  # the reference: the module's random, seeded once, one stream for documents and starts
        random.seed(seed)
        trainloader = []
        for _ in range(nsamples):
            while True:
                i = random.randint(0, len(rows) - 1)
                trainenc = bos_tok(rows[i], return_tensors="pt")
                if trainenc.input_ids.shape[1] > seqlen:
                    break
            i = random.randint(0, trainenc.input_ids.shape[1] - seqlen - 1)
            trainloader.append(trainenc.input_ids[:, i : i + seqlen])
    finally:
        random.setstate(state)
    expected = torch.cat(trainloader)

    got = reference_windows(rows, bos_tok, nsamples, seqlen, seed)
    assert torch.equal(got, expected)
    assert not torch.equal(reference_windows(rows, byte_tokenizer(), nsamples, seqlen, seed), got)  # the BOS counts
    assert not torch.equal(reference_windows(rows, bos_tok, nsamples, seqlen, seed + 1), got)


def test_reference_sampler_stops_where_the_reference_would_loop_for_ever(bos_tok):
    with pytest.raises(CalibrationError, match=r"my corpus: .*seqlen=500 .*none of its 60 documents"):
        reference_windows(rows_with_empty_ones(), bos_tok, 4, 500, 0, "my corpus")


# ---------------------------------------------------------------- (b) perplexity equals a whole-model loop
def test_tiny_dense_reference_perplexity_equals_a_plain_whole_model_loop():
    model, tok = build_tiny_model(add_bos=True)
    rows, seqlen = rows_with_empty_ones(40), 64
    windows = reference_eval_windows(rows, tok, seqlen, 0)
    ours = perplexity(model, windows, batch_size=3)

    # eval_ppl_wikitext: one window at a time, the model's own forward, mean loss × seqlen, exp(sum / (n × seqlen))
    nlls = []
    with torch.no_grad():
        for j in range(windows.shape[0]):
            inputs = windows[j : j + 1]
            lm_logits = model(inputs).logits
            shift_logits, shift_labels = lm_logits[:, :-1, :].contiguous(), inputs[:, 1:]
            loss = nn.CrossEntropyLoss()(shift_logits.reshape(-1, shift_logits.size(-1)), shift_labels.reshape(-1))
            nlls.append(loss.float() * seqlen)
    reference = torch.exp(torch.stack(nlls).sum() / (windows.shape[0] * seqlen)).item()
    assert windows.shape[0] >= 10
    assert ours["perplexity"] == pytest.approx(reference, rel=1e-5)
    assert ours["tokens"] == windows.shape[0] * (seqlen - 1)


# ---------------------------------------------------------------- (c) PruneFlow's own protocol is unchanged
def test_default_eval_windows_are_the_joined_stream_without_special_tokens():
    tok = byte_tokenizer()
    docs = [r for r in rows_with_empty_ones() if r.strip()]
    ids = tok("\n\n".join(docs), add_special_tokens=False)["input_ids"]
    for bos, step in ((False, 64), (True, 63)):
        n = len(ids) // step
        expected = torch.tensor(ids[: n * step]).view(n, step)
        if bos:
            expected = torch.cat([torch.zeros(n, 1, dtype=torch.long), expected], dim=1)
        assert torch.equal(eval_windows(docs, tok, 64, 0, bos), expected)
        assert torch.equal(eval_windows(docs, tok, 64, 5, bos), expected[:5])
        # blank rows (as an hf corpus file now keeps them) change nothing in PruneFlow's protocol
        assert torch.equal(eval_windows(rows_with_empty_ones(), tok, 64, 0, bos), expected)


def test_default_calibration_draws_are_unchanged_and_skip_blank_rows():
    tok = byte_tokenizer()
    docs = [r for r in rows_with_empty_ones(80, seed=2) if r.strip()]
    rng, windows = random.Random(5), []
    while len(windows) < 6:  # PruneFlow's draw: randrange over documents, then over starts
        ids = tok(docs[rng.randrange(len(docs))], add_special_tokens=False)["input_ids"]
        if len(ids) > 64:
            start = rng.randrange(len(ids) - 64)
            windows.append(ids[start : start + 64])
    expected = torch.tensor(windows)
    assert torch.equal(sample_windows(docs, tok, 6, 64, 5), expected)
    assert torch.equal(sample_windows(rows_with_empty_ones(80, seed=2), tok, 6, 64, 5), expected)


def test_default_names_unchanged_and_reference_names_apart():
    cal = {"corpus": "brown", "nsamples": 32, "seqlen": 256, "seed": 0}
    assert calib_id(cal) == calib_id({**cal, "protocol": "pruneflow"}) == "brown-n32-l256-s0"
    assert calib_id({**cal, "protocol": "reference"}) == "brown-n32-l256-s0-ref"
    for cid in ("brown-n32-l256-s0", "my-c4-n128-l2048-s7-ref"):
        assert calib_id(parse_calib_id(cid)) == cid
    ppl = {"corpus": "wiki", "seqlen": 512, "windows": 4, "bos": "auto"}
    assert ppl_name(ppl) == ppl_name({**ppl, "protocol": "pruneflow"}) == "ppl-wiki-l512-w4-bosauto.json"
    assert parse_ppl_name("ppl-wiki-l512-w4-bosauto.json") == ppl  # the default job's params as they were
    ref = ppl_name({**ppl, "protocol": "reference", "windows": 0})
    assert ref == "ppl-wiki-l512-w0-ref.json"
    assert parse_ppl_name(ref) == {"corpus": "wiki", "seqlen": 512, "windows": 0, "protocol": "reference"}


# ---------------------------------------------------------------- hf rows, settings
def test_hf_rows_are_verbatim_and_in_order_online_and_from_the_cache_offline(hub, tmp_path):
    """WikiText-2 and C4 through the stand-in Hub (tests/hub_repos.py), in a child process (the libraries read
    HF_ENDPOINT when imported): every row verbatim and in order, empty ones included; then the same offline."""
    import subprocess
    import sys

    from conftest import REPO
    from hub_repos import C4_FILES, c4_repo, wikitext_repo

    script = ("import json; from pruneflow.data.corpora import corpus_splits; "
              "print(json.dumps({n: corpus_splits({'source': 'hf', 'name': n}) for n in ('wikitext-2-raw-v1', 'c4')}))")

    def run(env):
        proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                              env={**os.environ, "PYTHONPATH": str(REPO / "src"), **env})
        assert proc.returncode == 0, proc.stderr[-3000:]
        return json.loads(proc.stdout.splitlines()[-1])

    online = run(hub.env(tmp_path / "hf"))
    wikitext = pq.read_table(io.BytesIO(wikitext_repo()["wikitext-2-raw-v1/test-00000-of-00001.parquet"]))
    assert online["wikitext-2-raw-v1"]["eval"] == wikitext.column("text").to_pylist() and "" in online["wikitext-2-raw-v1"]["eval"]
    lines = gzip.decompress(c4_repo()[C4_FILES["train"]]).decode().splitlines()
    assert online["c4"]["calib"] == [json.loads(line)["text"] for line in lines]
    assert run({**hub.env(tmp_path / "hf"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}) == online


def test_hf_load_failure_names_the_dataset_and_how_to_fill_the_cache(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    import datasets

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    with pytest.raises(CorpusError) as err:
        corpus_splits({"source": "hf", "name": "c4"})
    text = str(err.value)
    assert "'allenai/c4'" in text and "split 'train'" in text and "en/c4-train.00000-of-01024.json.gz" in text
    assert "hf download allenai/c4 en/c4-train.00000-of-01024.json.gz --repo-type dataset" in text
    assert "HF_HUB_OFFLINE=1" in text


def _config(tiny_model_dir, **perplexity):
    config = tiny_config(tiny_model_dir)
    config["studies"] = {"sweep": {"criteria": ["wanda"], "patterns": [0.5]}}
    config["perplexity"].update(perplexity)
    return config


def test_seqlen_model_is_the_models_positions_and_needs_them(tiny_model_dir):
    config = _config(tiny_model_dir, seqlen="model")
    validate_config(config)
    assert perplexity_seqlen(config) == json.loads((tiny_model_dir / "config.json").read_text())["max_position_embeddings"]
    hub = {**config, "model": "h", "models": {"h": {"source": "hub", "id": "nobody/not-cached-anywhere"}}}
    # offline (conftest), a hub model's config.json can be neither read nor fetched: the stop names it and the fix
    with pytest.raises(ConfigError, match=r"models\.h: hub model 'nobody/not-cached-anywhere'.*hf download"):
        perplexity_seqlen(hub)
    cli = {"perplexity": {"seqlen": "model", "windows": "0"}}
    coerce_cli_values(cli, cli)
    assert cli["perplexity"] == {"seqlen": "model", "windows": 0}
    cli = {"perplexity": {"seqlen": "128"}}
    coerce_cli_values(cli, cli)
    assert cli["perplexity"] == {"seqlen": 128}


def test_seqlen_model_is_checked_against_the_declared_memory(tiny_model_dir):
    from pruneflow.spec.preflight import check_config

    config = _config(tiny_model_dir, seqlen="model", protocol="reference")
    check_config(config)  # nothing declared: nothing to check
    config["runtime"]["max_memory"] = {"cpu": "100MB"}
    with pytest.raises(ConfigError, match=r"perplexity\.seqlen: 2048 tokens a window need about .* allows 0\.1 GB"):
        check_config(config)


def test_a_row_cap_is_refused_with_a_reference_protocol(tiny_model_dir):
    config = _config(tiny_model_dir, protocol="reference")
    config["corpora"]["wiki"] = {"source": "hf", "name": "wikitext-2-raw-v1", "max_documents": 100}
    with pytest.raises(ConfigError, match=r"corpora\.wiki\.max_documents: not allowed with perplexity\.protocol: reference"):
        validate_config(config)


# ---------------------------------------------------------------- (4) the workflow, both protocols reference
@pytest.mark.slow
def test_workflow_plans_and_runs_the_reference_protocol(tmp_path, tiny_model_dir):
    text = tmp_path / "wiki.txt"
    text.write_text("\n\n".join(r.strip() or "x" for r in rows_with_empty_ones(120, seed=4)))
    config = _config(tiny_model_dir, corpus="wiki", windows=0, protocol="reference")
    config["corpora"]["wiki"] = {"source": "text", "path": str(text), "eval_fraction": 0.5}
    config["calibration"]["protocol"] = "reference"
    write_config(tmp_path, config)
    calib = "results/tiny/calib/brown-n4-l64-s0-ref.safetensors"
    ppl = "results/tiny/eval/dense/ppl-wiki-l64-w0-ref.json"

    out = snakemake(tmp_path, "--dry-run").stdout
    assert calib in out and "results/tiny/pruned/brown-n4-l64-s0-ref/wanda-u0.5-seq" in out and ppl in out
    assert "brown-n4-l64-s0." not in out and "-bos" not in out  # no artifact of PruneFlow's protocol is planned

    snakemake(tmp_path, calib, ppl)
    result = json.loads((tmp_path / ppl).read_text())
    assert result["protocol"] == "reference" and result["seqlen"] == 64 and "bos" not in result
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    rows = [json.loads(line)["text"] for line in (tmp_path / "results/corpora/wiki/eval.jsonl").read_text().splitlines()]
    assert result["windows"] == 0 and result["tokens"] == len(tok("\n\n".join(rows))["input_ids"]) // 64 * 63  # all windows
    docs = [json.loads(line)["text"] for line in (tmp_path / "results/corpora/brown/calib.jsonl").read_text().splitlines()]
    with safe_open(str(tmp_path / calib), "pt") as f:
        assert torch.equal(f.get_tensor("input_ids"), reference_windows(docs, tok, 4, 64, 0))
        assert f.metadata()["protocol"] == "reference"
