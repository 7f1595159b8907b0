"""Repositories for the stand-in Hub (tests/hub_standin.py), built at test time in the Hub's own formats.

- ``pruneflow-test/tiny-llama`` (float16) and ``pruneflow-test/tiny-llama-bf16``: the tiny random LLaMA
  (pruneflow.core.tiny) saved by ``save_pretrained`` (safetensors, ``config.json`` with its dtype), with a
  byte-level tokenizer that puts a BOS first, as LLaMA's does.
- ``Salesforce/wikitext`` (``wikitext-2-raw-v1``; the legacy id ``wikitext`` is refused by huggingface_hub 2):
  parquet splits under the config's folder, rows as the real one has
  them (headings, paragraphs and empty rows), described by the card's ``configs`` front matter.
- ``allenai/c4``: ``en/c4-train.00000-of-01024.json.gz`` and ``en/c4-validation.00000-of-00008.json.gz``, the
  two files the reference code reads, JSON lines with ``text``, ``timestamp`` and ``url``.
- ``huggyllama/llama-7b``, ``meta-llama/Llama-2-7b-hf``, ``meta-llama/Llama-3.1-8B`` and ``facebook/opt-2.7b``
  (the models of config/paper*.yaml, perp.yaml, freelunch.yaml, liar.yaml): their ``config.json`` only (the public values), so
  the papers' configurations plan and size their jobs as the real models; no weights.
- the papers' seven zero-shot tasks under the repositories, configs and fields that lm-eval's task YAMLs
  name: ``aps/super_glue`` (boolq), ``nyu-mll/glue`` (rte), ``Rowan/hellaswag``, ``allenai/winogrande``
  (winogrande_xl), ``allenai/ai2_arc`` (ARC-Easy, ARC-Challenge), ``allenai/openbookqa`` (main).

Text comes from the Wikipedia summaries wheel (the packaged held-out text), so items read like prose; they
are synthetic and mean nothing as benchmarks. Everything is seeded: the same bytes every run.
"""

from __future__ import annotations

import gzip
import io
import json
import random
import re
import tempfile
from pathlib import Path

import yaml

TINY_REPO = "pruneflow-test/tiny-llama"
TINY_REPO_BF16 = "pruneflow-test/tiny-llama-bf16"
C4_FILES = {"train": "en/c4-train.00000-of-01024.json.gz", "validation": "en/c4-validation.00000-of-00008.json.gz"}
# lm-eval task -> (dataset repository, config or None)
ZEROSHOT_DATASETS = {
    "boolq": ("aps/super_glue", "boolq"),
    "rte": ("nyu-mll/glue", "rte"),
    "hellaswag": ("Rowan/hellaswag", None),
    "winogrande": ("allenai/winogrande", "winogrande_xl"),
    "arc_easy": ("allenai/ai2_arc", "ARC-Easy"),
    "arc_challenge": ("allenai/ai2_arc", "ARC-Challenge"),
    "openbookqa": ("allenai/openbookqa", "main"),
}
PAPER_TASKS = list(ZEROSHOT_DATASETS)


def sentences(n: int, seed: int = 0) -> list[str]:
    """``n`` sentences of the packaged Wikipedia summaries, in a seeded order."""
    from pruneflow.data.corpora import wiki_summary_documents

    docs = wiki_summary_documents()[:400]
    found = [s.strip() for d in docs for s in re.split(r"(?<=[.!?])\s+", d) if 40 <= len(s.strip()) <= 200]
    random.Random(seed).shuffle(found)
    return found[:n]


# ---------------------------------------------------------------- model
def tiny_model_repo(dtype: str = "float16") -> dict[str, bytes]:
    """The tiny LLaMA's files as ``save_pretrained`` writes them, weights in ``dtype``, tokenizer adding a BOS."""
    import torch
    from tokenizers.processors import TemplateProcessing

    from pruneflow.core.tiny import build_tiny_model

    model, tok = build_tiny_model()
    tok.backend_tokenizer.post_processor = TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tok.bos_token_id)]
    )
    tok.add_bos_token = True
    with tempfile.TemporaryDirectory() as tmp:
        model.to(getattr(torch, dtype)).save_pretrained(tmp)
        tok.save_pretrained(tmp)
        return {p.name: p.read_bytes() for p in Path(tmp).iterdir() if p.is_file()}


_LLAMA_7B = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu", "hidden_size": 4096,
    "intermediate_size": 11008, "num_attention_heads": 32, "num_hidden_layers": 32, "vocab_size": 32000,
    "bos_token_id": 1, "eos_token_id": 2, "initializer_range": 0.02, "tie_word_embeddings": False, "torch_dtype": "float16",
}
CONFIG_ONLY = {
    "huggyllama/llama-7b": {**_LLAMA_7B, "max_position_embeddings": 2048, "rms_norm_eps": 1e-6, "pad_token_id": 0},
    "meta-llama/Llama-2-7b-hf": {**_LLAMA_7B, "max_position_embeddings": 4096, "rms_norm_eps": 1e-5,
                                 "num_key_value_heads": 32, "pretraining_tp": 1, "rope_scaling": None},
    "meta-llama/Llama-3.1-8B": {
        **_LLAMA_7B, "intermediate_size": 14336, "num_key_value_heads": 8, "vocab_size": 128256, "bos_token_id": 128000,
        "eos_token_id": 128001, "max_position_embeddings": 131072, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
        "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 8192, "rope_type": "llama3"}, "torch_dtype": "bfloat16"},
    "facebook/opt-2.7b": {
        "architectures": ["OPTForCausalLM"], "model_type": "opt", "hidden_size": 2560, "ffn_dim": 10240,
        "num_hidden_layers": 32, "num_attention_heads": 32, "vocab_size": 50272, "max_position_embeddings": 2048,
        "word_embed_proj_dim": 2560, "do_layer_norm_before": True, "activation_function": "relu",
        "bos_token_id": 2, "eos_token_id": 2, "pad_token_id": 1, "torch_dtype": "float16"},
}


# ---------------------------------------------------------------- datasets
def parquet(rows: list[dict]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buf)
    return buf.getvalue()


def parquet_dataset(configs: dict[str | None, dict[str, list[dict]]]) -> dict[str, bytes]:
    """A dataset repository as the Hub's parquet conversion lays it out: ``<config>/<split>-00000-of-00001.parquet``
    and a card whose ``configs`` front matter maps each config's splits to its files."""
    files, entries = {}, []
    for config, splits in configs.items():
        folder = config or "default"
        data_files = []
        for split, rows in splits.items():
            path = f"{folder}/{split}-00000-of-00001.parquet"
            files[path] = parquet(rows)
            data_files.append({"split": split, "path": f"{folder}/{split}-*"})
        entries.append({"config_name": folder, "data_files": data_files})
    card = "---\n" + yaml.safe_dump({"configs": entries}, sort_keys=False) + "---\n# Stand-in dataset for PruneFlow's tests\n"
    files["README.md"] = card.encode()
    return files


def wikitext_rows(n_articles: int, seed: int) -> list[dict]:
    """Rows as WikiText-2 raw has them: an empty row, a " = Title = " heading, an empty row, paragraphs
    (each followed by an empty row), with the corpus's spaces around punctuation."""
    text = sentences(6 * n_articles, seed)
    rows = []
    for a in range(n_articles):
        paragraph = " ".join(text[6 * a : 6 * a + 6])
        rows += [{"text": ""}, {"text": f" = Article {a} = \n"}, {"text": ""}, {"text": f" {paragraph} \n"}]
    return rows


def wikitext_repo() -> dict[str, bytes]:
    return parquet_dataset({"wikitext-2-raw-v1": {
        "test": wikitext_rows(12, 1), "train": wikitext_rows(24, 2), "validation": wikitext_rows(6, 3)}})


def c4_repo() -> dict[str, bytes]:
    """Two gzipped JSON-lines files; documents of 1 to 40 sentences (about 150 to 6,000 bytes, so about as
    many tokens of the tiny model's byte tokenizer): many are shorter than a 2048-token window, some longer."""
    text = sentences(600, 4)
    rng = random.Random(5)
    files = {}
    for split, path in C4_FILES.items():
        lines = []
        for i in range(60 if split == "train" else 20):
            k = rng.randint(1, 40)
            doc = " ".join(rng.sample(text, k))
            lines.append(json.dumps({"text": doc, "timestamp": "2019-04-25T12:57:54Z", "url": f"https://example.org/{split}/{i}"}))
        files[path] = gzip.compress(("\n".join(lines) + "\n").encode(), mtime=0)
    files["README.md"] = b"---\npretty_name: C4 stand-in\n---\n# allenai/c4 stand-in\n"
    return files


def zeroshot_rows(task: str, n: int, seed: int) -> list[dict]:
    """``n`` items of ``task`` with the fields its lm-eval YAML reads."""
    rng = random.Random(seed)
    text = sentences(6 * n, seed)

    def words(s):
        return s.rstrip(".!?").split()

    rows = []
    for i in range(n):
        a, b, c, d = text[6 * i : 6 * i + 4]
        if task == "boolq":
            rows.append({"question": " ".join(words(b)[:8]).lower(), "passage": a, "idx": i, "label": rng.randint(0, 1)})
        elif task == "rte":
            rows.append({"sentence1": a, "sentence2": b, "label": rng.randint(0, 1), "idx": i})
        elif task == "hellaswag":
            ws = words(a)
            cut = max(3, len(ws) // 2)
            rows.append({"ind": i, "activity_label": ws[0], "ctx_a": " ".join(ws[:cut]), "ctx_b": "", "ctx": " ".join(ws[:cut]),
                         "endings": [" ".join(ws[cut:])] + [" ".join(words(x)[cut:] or words(x)) for x in (b, c, d)],
                         "source_id": f"standin~{i}", "split": "val", "split_type": "indomain", "label": str(rng.randint(0, 3))})
        elif task == "winogrande":
            ws = words(a)
            k = rng.randrange(len(ws))
            rows.append({"sentence": " ".join(ws[:k] + ["_"] + ws[k + 1 :]) + ".", "option1": ws[k], "option2": words(b)[0],
                         "answer": str(rng.randint(1, 2))})
        else:  # arc_easy, arc_challenge, openbookqa: a question stem and four labelled choices
            choices = {"text": [" ".join(words(x)[-3:]) for x in (a, b, c, d)], "label": ["A", "B", "C", "D"]}
            answer = "ABCD"[rng.randrange(4)]
            stem = " ".join(words(a)[:-3]) + " ..."
            if task == "openbookqa":
                rows.append({"id": f"obqa-{i}", "question_stem": stem, "choices": choices, "answerKey": answer})
            else:
                rows.append({"id": f"arc-{i}", "question": stem, "choices": choices, "answerKey": answer})
    return rows


def zeroshot_repos(n: int = 24) -> dict[str, dict[str, bytes]]:
    """{repository: files} serving the seven tasks, ``n`` validation (and test) items each, a few train items."""
    by_repo: dict[str, dict] = {}
    for seed, (task, (repo, config)) in enumerate(ZEROSHOT_DATASETS.items()):
        splits = {"train": zeroshot_rows(task, 4, 100 + seed), "validation": zeroshot_rows(task, n, 200 + seed)}
        if task.startswith("arc") or task == "openbookqa":
            splits["test"] = zeroshot_rows(task, n, 300 + seed)
        by_repo.setdefault(repo, {})[config] = splits
    return {repo: parquet_dataset(configs) for repo, configs in by_repo.items()}


def standard_hub():
    """A started :class:`~hub_standin.HubStandIn` serving every repository above."""
    from hub_standin import HubStandIn

    hub = HubStandIn()
    hub.add("model", TINY_REPO, tiny_model_repo("float16"))
    hub.add("model", TINY_REPO_BF16, tiny_model_repo("bfloat16"))
    for repo, config in CONFIG_ONLY.items():
        hub.add("model", repo, {"config.json": json.dumps(config, indent=2).encode()})
    hub.add("dataset", "Salesforce/wikitext", wikitext_repo())
    hub.add("dataset", "allenai/c4", c4_repo())
    for repo, files in zeroshot_repos().items():
        hub.add("dataset", repo, files)
    return hub.start()
