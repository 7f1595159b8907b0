"""Memory a job of each rule kind needs, from the model's shape (its config, never its weights).

A job streams the model (pruneflow.core.stream): it holds the embeddings and head, one decoder block (or
two: a dense and a pruned one) and the activations of its tokens, never the whole model; the exceptions are
PERP retraining (the frozen model once, in its stored dtype) and ``recon:full`` / ``retrain:...+full``
(everything trains at once). The terms below say what is held; their constants were measured on
``bench/scale.py`` (a 0.46B LLaMA of 2048 hidden in bfloat16, every rule kind of the default) and the
benchmark checks every formula against the measured peak RSS (docs/scale.md). The workflow sizes SLURM's
``--mem`` (and local ``--resources mem_mb``) from :func:`job_peaks`; ``device`` is the accelerator's
share of the same job when ``runtime.device`` is a GPU (the host then keeps what is read from disk).

Before any job, :func:`check_fit` compares every kind of job the studies plan (:func:`planned_jobs`) with the
memory it would run in: the host's available memory (:func:`host_memory_available`) or the memory declared
(``--resources mem_mb``, a SLURM partition's), and each GPU's (:func:`gpu_memories`, or ``runtime.max_memory``).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from dataclasses import dataclass

from pruneflow.spec.config import AUTO_WINDOW_BATCH, ConfigError, window_batch_size
from pruneflow.spec.naming import (
    making_steps,
    parse_allocation_id,
    parse_method_id,
    parse_recovery,
    parse_recovery_id,
    ppl_name,
    repair_entry,
    sensitivity_artifacts,
    structured_repair_of,
    variants_of,
)
from pruneflow.spec.recovery import memory_kinds as recovery_memory_kinds
from pruneflow.spec.zeroshot import LOCAL_REQUEST_BYTES

BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "float64": 8}
# Python, torch and transformers imported (and lm-eval for zero-shot), before any weight: measured RSS.
BASE = 0.48e9
# what a zero-shot job adds before its first forward: lm-eval, datasets and the task loaded (0.14 GB, measured)
BASE_LM_EVAL = 0.15e9
LM_EVAL_CONTEXT = 2048  # lm-eval's context where a model's config gives none
LM_EVAL_AUTO_BATCH = 64  # the batch lm-eval starts from with eval_batch_size auto (and keeps on a CPU)
FP32 = 4
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|TB|KIB|MIB|GIB|TIB)?\s*$", re.IGNORECASE)
_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
ADAM = 16  # float32 master weight, gradient and two Adam moments per trained parameter


@dataclass(frozen=True)
class Shape:
    """What the memory of a job depends on: parameter counts by part and the stored bytes per value."""

    hidden: int
    ffn: int
    blocks: int
    vocab: int
    kv_width: int
    tied: bool
    dtype_bytes: int

    @property
    def attention_params(self) -> int:
        return 2 * self.hidden * self.hidden + 2 * self.hidden * self.kv_width

    @property
    def mlp_params(self) -> int:
        return 3 * self.hidden * self.ffn

    @property
    def block_params(self) -> int:
        return self.attention_params + self.mlp_params

    @property
    def outer_params(self) -> int:
        """Embeddings and (untied) head: held by every job that runs the model."""
        return self.vocab * self.hidden * (1 if self.tied else 2)

    @property
    def params(self) -> int:
        return self.blocks * self.block_params + self.outer_params

    @property
    def model_bytes(self) -> int:
        return self.params * self.dtype_bytes


def shape_of(model_config: dict, dtype: str = "float32") -> Shape:
    """The :class:`Shape` of a Hugging Face config (a multimodal one's ``text_config`` counts)."""
    cfg = {**(model_config.get("text_config") or {}), **model_config}
    hidden = cfg.get("hidden_size") or cfg.get("n_embd") or cfg.get("d_model")
    heads = cfg.get("num_attention_heads") or 1
    return Shape(
        hidden=hidden,
        ffn=cfg.get("intermediate_size") or cfg.get("ffn_dim") or cfg.get("n_inner") or 4 * hidden,
        blocks=cfg.get("num_hidden_layers") or cfg.get("n_layer") or cfg.get("num_layers"),
        vocab=cfg.get("vocab_size") or 32000,
        kv_width=(cfg.get("num_key_value_heads") or heads) * hidden // heads,
        tied=bool(cfg.get("tie_word_embeddings", True)),
        dtype_bytes=BYTES[dtype],
    )


def job_peaks(model_config: dict, dtype: str, config: dict) -> dict[str, dict[str, float]]:
    """Peak bytes per rule kind: ``{kind: {"host": bytes, "device": bytes}}`` for a CPU run (host) and the
    accelerator's part of a GPU run (device). ``config`` is the workflow's (calibration, perplexity, runtime).
    Kinds are the rules' (:func:`kind_of_benchmark`), with SparseGPT's sequential pruning, structured pruning
    with a least-squares repair and retraining with MaskLoRA/ScaleLoRA apart: they hold more."""
    s = shape_of(model_config, dtype)
    b = s.dtype_bytes
    outer, block = s.outer_params * b, s.block_params * b
    calib = config["calibration"]["nsamples"] * config["calibration"]["seqlen"]
    rt = config.get("runtime", {})
    hidden_states = calib * s.hidden * b  # the calibration set's hidden states, as pruning computes them
    hidden32 = calib * s.hidden * FP32  # ... and as reconstruction does (float32 blocks)
    # a block's input statistics, one per distinct layer input (q/k/v and gate/up share): summed in float64,
    # stored and used in float32
    grams64 = (3 * s.hidden**2 + s.ffn**2) * 8
    grams32 = grams64 / 2
    ffn_square = s.ffn**2 * FP32  # SparseGPT's Hessian of the widest input (its working copy, its factor)
    scores = s.block_params * FP32  # a block's float32 scores
    eval_tokens = window_batch_size(rt) * config["perplexity"]["seqlen"]  # auto: lm-eval sizes its own batches
    logits = eval_tokens * s.vocab * FP32
    train_tokens = config.get("retraining", {}).get("batch_size", 1) * config["calibration"]["seqlen"]
    # kept for the backward pass: per block, its activations (attention and MLP inputs/outputs, float32).
    # Gradient checkpointing keeps the blocks' inputs and recomputes one block.
    per_block = train_tokens * (6 * s.hidden + 3 * s.ffn) * FP32
    saved = s.blocks * train_tokens * s.hidden * FP32 + per_block if rt.get("gradient_checkpointing") else s.blocks * per_block
    # MaskLoRA/ScaleLoRA make one layer's weight W' at a time (and its gradient, and a keep-mask read off the
    # weight: 2 x b + 1 bytes a weight of the widest layer); nothing of it is kept between layers
    merged = (2 * b + 1) * s.hidden * s.ffn
    cap = memory_caps(rt).get("cpu")
    dispatched = min(cap, s.blocks * block) if cap is not None else s.blocks * block
    streamed = outer + block  # what any streaming job holds of the model
    # What a recovery mode's memory formula reads (its registry entry's, spec/recovery.py): bytes, but for the
    # shape's counts and ``adam``, the bytes per trained parameter.
    terms = dict(outer=outer, block=block, model_bytes=s.model_bytes, params=s.params, mlp_params=s.mlp_params, blocks=s.blocks,
                 hidden=s.hidden, hidden32=hidden32, saved=saved, logits=logits, merged=merged, adam=ADAM)
    device = {
        "activation_cache": streamed + 2 * hidden_states + grams64 + 2 * grams32,  # sums, float32 copy, file bytes
        "prune_by_score": streamed + 2.5 * scores,  # scores and the sort that thresholds them
        "prune_from_cache": streamed + grams32 + ffn_square,  # the stored Grams and one factor (made in its Gram)
        "prune_sequential": streamed + 2 * hidden_states + 2 * scores,
        # the float64 sums as they are rounded: more than the float32 Grams and one factor, made in its Gram
        "prune_sparsegpt": streamed + 2 * hidden_states + grams64 + grams32,
        "prune_structured": streamed + 2 * hidden_states + calib * s.ffn * FP32,
        # float64 moments and the least-squares solve's working copy and factor (three [ffn, ffn], measured)
        "prune_structured_liar": streamed + 2 * hidden_states + 3 * s.ffn**2 * 8,
        "allocation": streamed + scores + ffn_square,
        "perplexity": streamed + 2 * eval_tokens * s.hidden * FP32 + 2 * logits,
        "zeroshot": zeroshot_need(s, model_config, config, on_gpu=True),
        "speed": outer + dispatched,
        "sensitivity": streamed + block + 2 * logits,
        **{kind: formula(terms) for kind, formula in recovery_memory_kinds().items()},
    }
    host = {kind: BASE + need for kind, need in device.items()}
    host["zeroshot"] = BASE + BASE_LM_EVAL + zeroshot_need(s, model_config, config, on_gpu=False)
    host.update(
        model=BASE + s.model_bytes,  # transformers loads the source whole, once (not streamed yet)
        export=BASE + s.model_bytes,  # a Hugging Face folder is written from a whole model
        calibration=BASE, corpus=BASE, zeroshot_task=BASE, report=BASE, claims=BASE,
    )
    return {kind: {"host": host[kind], "device": device.get(kind, 0.0)} for kind in host}


def memory_shape(model_config: dict, dtype: str, config: dict) -> dict:
    """What a registered method's memory term (``Entry.memory``) reads: the model's :class:`Shape` (hidden, ffn,
    blocks, vocab, kv_width, tied, dtype_bytes) and the calibration ``tokens``."""
    calib = config["calibration"]
    return {**dataclasses.asdict(shape_of(model_config, dtype)), "tokens": calib["nsamples"] * calib["seqlen"]}


def artifact_memory(artifact: str, shape: dict) -> float:
    """Bytes the registered methods making ``artifact`` (``pruned/<calib>/<method id>``: its criterion or solver and
    refinement; ``allocation/<calib>/<id>``: its allocation) declare beyond their rule's formula, which holds what
    the built-ins need (SparseGPT's Gram and factor among them)."""
    kind, _, name = artifact.rpartition("/")
    try:
        if kind.startswith("pruned/"):
            method = parse_method_id(name)
            parts = (method.scorer, method.refinement)
        elif kind.startswith("allocation/"):
            parts = (parse_allocation_id(name)[0],)
        else:
            return 0.0
    except ValueError:
        return 0.0
    return float(sum(p.entry.memory(shape) for p in parts if p and p.entry.memory))


def zeroshot_held_blocks(runtime: dict, on_gpu: bool) -> int | None:
    """Decoder blocks a zero-shot job holds at once (``runtime.zeroshot_blocks``; auto: 1 on the CPU, all on a
    GPU); None: all, spread by accelerate within ``runtime.max_memory``."""
    held = runtime.get("zeroshot_blocks", "auto")
    if held == "auto":
        held = "all" if on_gpu else 1
    return None if held == "all" else int(held)


def zeroshot_request_tokens(model_config: dict, config: dict) -> int:
    """The longest request a zero-shot job may batch, in tokens, at most lm-eval's context (the model's
    positions): a local task's longest request in bytes (a tokenizer makes at most about a token a byte), an
    lm-eval task's context (its items are not known before they are read)."""
    cfg = {**(model_config.get("text_config") or {}), **model_config}
    context = next((cfg[k] for k in ("n_positions", "max_position_embeddings", "n_ctx") if cfg.get(k)), LM_EVAL_CONTEXT)
    tasks = (config.get("zeroshot") or {}).get("tasks") or []
    return min(context, max((LOCAL_REQUEST_BYTES.get(t, context) + 1 for t in tasks), default=context))  # + a BOS


def zeroshot_need(s: Shape, model_config: dict, config: dict, on_gpu: bool) -> float:
    """Bytes a zero-shot job holds beyond the libraries: the embeddings and head; the blocks it holds, or the
    blocks accelerate places in memory (runtime.zeroshot_blocks: all); while a block is read, a compact
    variant's keep-masks unpacked (a byte a weight) and its stored values or the parent's pages (a block); the
    longest batch's activations, and its logits and their log-softmax (in the model's dtype, as lm-eval takes them)."""
    rt = config.get("runtime", {})
    b, block = s.dtype_bytes, s.block_params * s.dtype_bytes
    batch = rt.get("eval_batch_size", AUTO_WINDOW_BATCH)
    tokens = (LM_EVAL_AUTO_BATCH if batch == "auto" else int(batch)) * zeroshot_request_tokens(model_config, config)
    held = zeroshot_held_blocks(rt, on_gpu)
    if held is None:
        cap = None if on_gpu else memory_caps(rt).get("cpu")
        blocks = min(cap, s.blocks * block) if cap is not None else s.blocks * block
    else:
        blocks = min(held, s.blocks) * block
    activations = tokens * (4 * s.hidden + 3 * s.ffn) * b  # the residual stream, attention's and the MLP's
    rebuild = s.block_params + block
    return s.outer_params * b + blocks + rebuild + activations + 2 * tokens * s.vocab * b


def check_whole_model_recoveries(config: dict, peaks: dict) -> None:
    """Raise ConfigError for a ``recon:full`` / ``retrain:...+full`` whose need exceeds the memory that
    ``runtime.max_memory`` declares for the device it trains on (CPU: ``cpu``; GPU: ``runtime.gpus`` times
    ``cuda`` or ``cuda:<i>``). Nothing declared: nothing to check."""
    rt = config["runtime"]
    caps = memory_caps(rt)
    on_cpu = rt["device"] == "cpu"
    gpu_caps = [v for k, v in caps.items() if k.startswith("cuda")]
    limit = caps.get("cpu") if on_cpu else (rt["gpus"] * min(gpu_caps) if gpu_caps else None)
    if limit is None:
        return
    for name, study in config["studies"].items():
        for spec in study.get("recoveries", []) if study.get("kind") == "recovery" else []:
            rec = parse_recovery(spec)
            if rec is None or not rec.trains_every_weight:
                continue
            need = peaks[rec.memory_kind]["host" if on_cpu else "device"]
            if need > limit:
                where = "the CPU" if on_cpu else f"{rt['gpus']} GPU(s)"
                raise ConfigError(
                    f"studies.{name}.recoveries: {spec!r} trains the whole model at once and needs about {need / 1e9:.1f} GB "
                    f"on {where} (pruneflow.spec.resources), but runtime.max_memory allows {limit / 1e9:.1f} GB; allowed: a "
                    "layer-wise recovery (recon:sublayer, recon:block, retrain of norms/biases/adapters), more memory or runtime.gpus")


def memory_caps(runtime: dict) -> dict[str, int]:
    """``runtime.max_memory`` in bytes per key (the schema checks the keys); a bad size raises ConfigError."""
    caps = {}
    for key, size in (runtime.get("max_memory") or {}).items():
        try:
            caps[str(key)] = parse_size(size)
        except ValueError as err:
            raise ConfigError(f"runtime.max_memory.{key}: {err}") from None
    return caps


def parse_size(value) -> int:
    """Bytes from an int or a string such as ``"20GiB"`` / ``"512MB"``."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    match = _SIZE.match(str(value))
    if match is None:
        raise ValueError(f"memory size {value!r}: allowed a byte count or a number with a unit ({', '.join(_UNITS).upper()})")
    return int(float(match.group(1)) * _UNITS[(match.group(2) or "b").lower()])


def recovery_kind(recovery: str) -> str:
    """The memory kind of a recovery id (``recon-sublayer-...``, ``retrain-norms+full-...``): its registry entry's."""
    return parse_recovery_id(recovery).memory_kind


def pruning_kind(method: str) -> str:
    """The memory kind of an unstructured or structured method id (``sparsegpt-u0.5-seq``, ``...-liar0.1``): a
    method that reads Gram matrices holds them (``prune_sparsegpt`` sequentially, ``prune_from_cache`` a solver on
    the dense stream, ``prune_structured_liar`` a structured repair's float64 moments), the others a block's scores."""
    if (recon := structured_repair_of(method)) is not None:
        repair = repair_entry(recon)
        return "prune_structured_liar" if repair and "gram" in repair.needs else "prune_structured"
    try:
        parsed = parse_method_id(method)
    except ValueError:  # no method id of this checkout's registry (an old benchmark file's): a block's scores
        return "prune_by_score"
    gram = any("gram" in p.entry.needs for p in (parsed.scorer, parsed.refinement) if p)
    if parsed.stream == "sequential":
        return "prune_sparsegpt" if gram else "prune_sequential"
    return "prune_from_cache" if parsed.scorer.entry.kind == "solver" else "prune_by_score"


def kind_of_benchmark(path: str) -> str:
    """The rule kind of a job from its benchmark file (relative to ``results/benchmarks``)."""
    parts = path.removesuffix(".tsv").split("/")
    if parts[0] in ("corpora", "report"):
        return {"corpora": "corpus", "report": "report"}[parts[0]]
    if parts[0] == "zeroshot":
        return "zeroshot_task"
    rest = parts[1:]
    if rest == ["dense"]:
        return "model"
    head = rest[0]
    if head in ("calib", "acts", "allocation", "sensitivity", "export"):
        return {"calib": "calibration", "acts": "activation_cache"}.get(head, head)
    if head == "pruned":
        return pruning_kind(rest[-1])
    if head == "structured":
        kind = pruning_kind(rest[-1])
        return kind if kind == "prune_structured_liar" else "prune_structured"
    if head == "recovered":
        return recovery_kind(rest[-1])
    if head == "eval":
        last = rest[-1]
        return "zeroshot" if last.startswith("zeroshot-") else "speed" if last.startswith("speed-") else "perplexity"
    raise ValueError(f"benchmark {path}: not a known rule's benchmark file")


# ---------------------------------------------------------------- the fit check, before any job
# The rule that runs each memory kind (rules/*.smk); a job of a dispatched kind (zero-shot, speed) spreads its
# blocks over the GPUs, the CPU (runtime.max_memory) and disk, so only its host memory is checked.
RULE_OF_KIND = {
    "model": "model", "activation_cache": "activation_cache", "prune_by_score": "prune_by_score",
    "prune_from_cache": "prune_from_cache", "prune_sequential": "prune_sequential", "prune_sparsegpt": "prune_sequential",
    "prune_structured": "prune_structured", "prune_structured_liar": "prune_structured", "allocation": "allocation",
    "sensitivity": "sensitivity", "perplexity": "perplexity", "zeroshot": "zeroshot", "speed": "speed",
    **{kind: "recover" for kind in recovery_memory_kinds()},  # the recovery modes' kinds (recon, retrain_adapter, ...)
}
DISPATCHED = ("zeroshot", "speed")


@dataclass(frozen=True)
class Limit:
    """Memory a job may take (bytes) and where that number comes from (said in the message)."""

    bytes: int
    source: str


def job_mem_mb(peak: float) -> int:
    """A job's ``mem_mb`` from its formula's peak (bytes): +60% (measured peaks reach 1.56x it on bench/scale.py:
    glibc keeps freed blocks) and +1 GB (what Python, torch and transformers take varies with the machine's
    builds). SLURM kills a job over its --mem; the fit check compares this with the host's memory."""
    return math.ceil(1.6 * peak / 2**20) + 1024


def planned_jobs(config: dict) -> dict[str, list[str]]:
    """The jobs the studies plan, by memory kind: ``{kind: [artifact under results/<model>/, ...]}`` (the
    dense model, shared steps such as activation caches and allocations, each variant, its evaluations)."""
    jobs: dict[str, dict[str, None]] = {"model": {"dense": None}}

    def add(kind, artifact):
        jobs.setdefault(kind, {})[artifact] = None

    ppl = ppl_name(config["perplexity"])
    for study in config["studies"].values():
        for variant in variants_of(study, config):
            for artifact in (a for steps in making_steps(variant).values() for a in steps):
                add(kind_of_benchmark(f"m/{artifact}"), artifact)
            add("perplexity", f"eval/{variant}/{ppl}")
            for task in config.get("zeroshot", {}).get("tasks", []) if study.get("zeroshot") else []:
                add("zeroshot", f"eval/{variant}/zeroshot-{task}")
            if study.get("kind") == "structured" and study.get("speed"):
                add("speed", f"eval/{variant}/speed")
        for artifact in sensitivity_artifacts(study, config) if study.get("kind") == "sensitivity" else []:
            add("sensitivity", artifact)
    return {kind: list(artifacts) for kind, artifacts in jobs.items()}


def fit_problems(config: dict, peaks: dict, host, gpu: Limit | None = None, shape: dict | None = None) -> list[str]:
    """One line for each kind of planned job whose need exceeds its limit: on the host its ``mem_mb``
    (:func:`job_mem_mb`) against ``host(rule)`` (a :class:`Limit`, or None: not checked); on a GPU its device
    peak against ``gpu`` (one GPU's memory; a whole-model recovery may take ``runtime.gpus`` of them). With
    ``shape`` (:func:`memory_shape`), the largest memory term a kind's methods declare is added (:func:`artifact_memory`)."""
    lines = []
    for kind, artifacts in sorted(planned_jobs(config).items()):
        rule = RULE_OF_KIND.get(kind)
        if rule is None or kind not in peaks:
            continue
        what = f"rule {rule}{f' ({kind})' if kind != rule else ''}, {len(artifacts)} job{'s' if len(artifacts) > 1 else ''}"
        limit = host(rule)
        extra = max((artifact_memory(a, shape) for a in artifacts), default=0.0) if shape else 0.0
        need = job_mem_mb(peaks[kind]["host"] + extra)
        if limit is not None and need * 2**20 > limit.bytes:
            lines.append(f"{what}: mem_mb {need:,} on the host; limit {limit.bytes // 2**20:,} MB ({limit.source})")
        gpus = config["runtime"].get("gpus", 1) if kind.endswith("_full") else 1
        device = peaks[kind]["device"] + extra
        if gpu is not None and kind not in DISPATCHED and device > gpus * gpu.bytes:
            on = f"{gpus} GPUs" if gpus > 1 else "the GPU"
            lines.append(f"{what}: {device / 2**30:,.1f} GiB on {on}; limit {gpus * gpu.bytes / 2**30:,.1f} GiB ({gpu.source})")
    return lines


def check_fit(config: dict, peaks: dict, host, gpu: Limit | None = None, shape: dict | None = None) -> None:
    """Raise :class:`ConfigError` naming every kind of planned job that does not fit (:func:`fit_problems`),
    with its need and limit, and the ways on."""
    lines = fit_problems(config, peaks, host, gpu, shape)
    if lines:
        raise ConfigError(
            f"model {config['model']!r}: {len(lines)} kind{'s' if len(lines) > 1 else ''} of planned job would not fit "
            "in memory (needs from pruneflow.spec.resources: a job's mem_mb is its formula's peak x 1.6 + 1 GB):\n  - "
            + "\n  - ".join(lines)
            + "\nNothing was run. Ways on: a smaller configuration (config/own-model.yaml: the Wanda table and "
            "sublayer reconstruction; or fewer calibration.nsamples, a shorter seqlen, no whole-model recovery); "
            "runtime.max_memory: {cpu: ...} to offload speed blocks to disk (zero-shot holds runtime.zeroshot_blocks); a machine with more "
            "memory (or a GPU: runtime.device: auto); or `--resources mem_mb=N` to declare the memory (MB) a job "
            "may take here yourself"
        )


def host_memory_available() -> int | None:
    """Bytes of memory this machine can give new work now: MemAvailable of /proc/meminfo (Linux), else the
    free physical pages (other Unix); None where neither is known (then nothing is checked)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def gpu_memories() -> list[tuple[str, int]]:
    """(name, total bytes) of each visible CUDA device; empty without CUDA. Imports torch: call it only when
    the configuration runs on a GPU (building the DAG stays fast otherwise)."""
    import torch

    if not torch.cuda.is_available():
        return []
    return [(torch.cuda.get_device_name(i), torch.cuda.get_device_properties(i).total_memory)
            for i in range(torch.cuda.device_count())]


def gpu_limit(runtime: dict, memories: list[tuple[str, int]]) -> Limit | None:
    """One GPU's memory for the check: ``runtime.max_memory``'s ``cuda`` / ``cuda:<i>`` caps where declared
    (the smallest), else the smallest visible GPU's total (any job may get any GPU); None without a GPU."""
    caps = {k: v for k, v in memory_caps(runtime).items() if k.startswith("cuda")}
    if caps:
        key = min(caps, key=caps.get)
        return Limit(caps[key], f"runtime.max_memory.{key}")
    if not memories:
        return None
    name, total = min(memories, key=lambda m: m[1])
    return Limit(total, f"{name}'s total memory" + (f", the smallest of {len(memories)} GPUs" if len(memories) > 1 else ""))
