"""Sizes checked against the model and the data when the workflow builds its DAG, before any job.

What is checked here (cheaply: a model's config, never its weights; corpus files by size, or read
and split when small) and what the jobs check exactly:

- ``calibration.seqlen`` and ``perplexity.seqlen`` (and the speed test's 256 tokens) against the
  model's positions (``max_position_embeddings`` or its family's name for it), when its config can
  be read (:func:`pruneflow.spec.model_config.read_model_config`); ``perplexity.seqlen: model`` is
  resolved to those positions (:func:`perplexity_seqlen`; a model whose config cannot be read stops here),
  and the perplexity job's memory at that length is then checked against ``runtime.max_memory``;
- every N:M pattern's M against the inputs of the model's layers (hidden and intermediate sizes),
  and each recovery mode's own check of the model (``recon:blocks:k`` against its number of blocks);
- a ``recon:full`` / ``retrain:...+full`` against the memory ``runtime.max_memory`` declares
  (:func:`pruneflow.spec.resources.check_whole_model_recoveries`; the one job that holds the whole model);
- zero-shot task names: a local task, or one lm-eval knows (its task files, read as text), of a kind PruneFlow
  scores (loglikelihood or multiple choice, a group's and a tag's members included; generation tasks are refused),
  and ``zeroshot.metric`` against the metrics each task reports;
- ``nsamples × seqlen`` calibration tokens, and the perplexity windows, against an upper bound on
  the tokens of the corpus part that serves them (:func:`pruneflow.data.corpora.corpus_bounds`), and a
  calibration ``seqlen`` against the longest document where it is known. A bound can only show
  that a corpus is too small; the calibration and perplexity jobs then count the real tokens and
  fail with a :class:`~pruneflow.data.corpora.CorpusError` naming the corpus file.
"""

from __future__ import annotations

from pathlib import Path

from pruneflow.data.corpora import CorpusError, corpus_bounds
from pruneflow.spec.config import ConfigError, validate_config, with_defaults
from pruneflow.spec.model_config import POSITION_KEYS, ModelConfigError, max_positions, read_model_config, resolve_dtype
from pruneflow.spec.naming import parse_recovery, sensitivity_artifacts, variants_of
from pruneflow.spec.patterns import parse_pattern
from pruneflow.spec.recovery import model_problem as recovery_model_problem
from pruneflow.spec.resources import check_whole_model_recoveries, job_peaks, memory_caps

SPEED_SEQLEN = 256  # structured studies with speed: true measure throughput on inputs this long (rules/report.smk)


def check_config(config: dict, base_dir: str | Path = ".", workflow_dir: str | Path = ".") -> None:
    """Everything checked before any job: :func:`~pruneflow.spec.config.validate_config` (the configuration on
    its own), then sizes against the model and the data (:func:`check_against_model_and_data`)."""
    validate_config(config, base_dir)
    check_against_model_and_data(config, base_dir, workflow_dir)


def check_against_model_and_data(config: dict, base_dir: str | Path = ".", workflow_dir: str | Path = ".") -> None:
    """Raise :class:`~pruneflow.spec.config.ConfigError` for a size the model or the data cannot serve."""
    name = config["model"]
    try:
        model_config = read_model_config(config["models"][name], base_dir)
    except ModelConfigError as err:
        raise ConfigError(f"models.{name}: {err}") from None
    original_seqlen = config["perplexity"]["seqlen"]
    config = {**config, "perplexity": {**config["perplexity"], "seqlen": _resolve_seqlen(config, name, model_config)}}
    if model_config:
        _check_positions(config, name, model_config)
        _check_layer_sizes(config, name, model_config)
        filled = with_defaults(config)
        dtype = resolve_dtype(config["models"][name], base_dir, model_config)
        peaks = job_peaks(model_config, dtype, filled)
        check_whole_model_recoveries(filled, peaks)
        if original_seqlen == "model":  # a length the user did not spell out: say at once if it cannot fit
            _check_perplexity_memory(filled, peaks)
    _check_zeroshot_tasks(config)
    cal, ppl = config["calibration"], config["perplexity"]
    if needs_calibration(config):
        bounds = _bounds(config, cal["corpus"], base_dir, workflow_dir)
        if bounds:
            _check_calibration(cal, bounds["calib"])
    bounds = _bounds(config, ppl["corpus"], base_dir, workflow_dir)
    if bounds:
        _check_perplexity(ppl, bounds["eval"])


def perplexity_seqlen(config: dict, base_dir: str | Path = ".") -> int:
    """``perplexity.seqlen`` as a number: ``model`` is the model's positions (its ``max_position_embeddings``,
    the reference code's ``model.seqlen``). Raises :class:`ConfigError` when its config says none."""
    if config["perplexity"]["seqlen"] != "model":
        return config["perplexity"]["seqlen"]
    name = config["model"]
    try:
        model_config = read_model_config(config["models"][name], base_dir)
    except ModelConfigError as err:
        raise ConfigError(f"models.{name}: {err}") from None
    return _resolve_seqlen(config, name, model_config)


def _resolve_seqlen(config, name, model_config) -> int:
    seqlen = config["perplexity"]["seqlen"]
    if seqlen != "model":
        return seqlen
    positions = max_positions(model_config)
    if not positions:
        why = "its config.json is not readable before any job (a hub model not in the Hugging Face cache?)" if not model_config else (
            f"its config names none of {', '.join(POSITION_KEYS)}")
        raise ConfigError(
            f"perplexity.seqlen: 'model' needs model {name!r}'s context length, but {why}; allowed: a number of tokens"
        )
    return positions


def _check_perplexity_memory(config, peaks):
    """The perplexity job at its window length against ``runtime.max_memory`` (nothing declared: no check)."""
    rt = config["runtime"]
    caps = memory_caps(rt)
    on_cpu = rt["device"] == "cpu"
    gpu_caps = [v for k, v in caps.items() if k.startswith("cuda")]
    limit = caps.get("cpu") if on_cpu else (min(gpu_caps) if gpu_caps else None)
    need = peaks["perplexity"]["host" if on_cpu else "device"]
    if limit is not None and need > limit:
        ppl = config["perplexity"]
        raise ConfigError(
            f"perplexity.seqlen: {ppl['seqlen']} tokens a window need about {need / 1e9:.1f} GB on "
            f"{'the CPU' if on_cpu else 'a GPU'} with runtime.eval_batch_size {rt.get('eval_batch_size')} "
            f"(pruneflow.spec.resources), but runtime.max_memory allows {limit / 1e9:.1f} GB; allowed: a smaller "
            "perplexity.seqlen or runtime.eval_batch_size, or more memory"
        )


def needs_calibration(config: dict) -> bool:
    """Whether any study compares a variant made with calibration samples (or, for a sensitivity
    study, prunes its blocks with them)."""
    return any(
        v != "dense" and v.split("/")[1] != "none"
        for study in config["studies"].values()
        for v in variants_of(study, config) + (sensitivity_artifacts(study, config) if study.get("kind") == "sensitivity" else [])
    )


def _check_positions(config, name, model_config):
    positions = max_positions(model_config)
    if not positions:
        return
    sizes = [("calibration.seqlen", config["calibration"]["seqlen"]), ("perplexity.seqlen", config["perplexity"]["seqlen"])]
    sizes += [
        (f"studies.{s}.speed", SPEED_SEQLEN) for s, study in config["studies"].items() if study.get("speed")
    ]
    for key, seqlen in sizes:
        if seqlen > positions:
            raise ConfigError(
                f"{key}: {seqlen} tokens is more than model {name!r} takes ({positions} positions in its config); "
                f"allowed: 2 to {positions}"
            )


def _check_layer_sizes(config, name, model_config):
    widths = {model_config.get(k) for k in ("hidden_size", "intermediate_size")} - {None}
    for s, study in config["studies"].items():
        for i, value in enumerate(study.get("patterns", [])):
            pattern = parse_pattern(value)
            bad = sorted(w for w in widths if pattern.is_nm and w % pattern.m)
            if bad:
                raise ConfigError(
                    f"studies.{s}.patterns[{i}]: {value!r} is not allowed for model {name!r}: M={pattern.m} does not "
                    f"divide its layers' input width {bad[0]} (hidden and intermediate sizes: "
                    f"{', '.join(map(str, sorted(widths)))}); allowed: an M that divides them, such as 4 or 8"
                )
        for i, spec in enumerate(study.get("recoveries", [])):
            problem = recovery_model_problem(parse_recovery(spec), model_config)
            if problem:
                raise ConfigError(f"studies.{s}.recoveries[{i}]: {spec!r} is not allowed for model {name!r}: {problem}")


def _check_zeroshot_tasks(config):
    from pruneflow.spec.zeroshot import LOCAL_TASKS, METRICS_OF, SUPPORTED_OUTPUT_TYPES, close_lm_eval_names, is_lm_eval_task, output_types

    if not any(study.get("zeroshot") for study in config["studies"].values()):
        return
    zs = config["zeroshot"]
    types: dict[str, str | None] = {}  # every task a result or a column may name: the tasks, their groups' and tags' members
    for i, task in enumerate(zs["tasks"]):
        known = task in LOCAL_TASKS or is_lm_eval_task(task)
        if known is None:  # lm-eval absent: its job says so
            continue
        if not known:
            close = close_lm_eval_names(task)
            raise ConfigError(
                f"zeroshot.tasks[{i}]: {task!r} is neither a local task nor an lm-eval task; allowed: "
                f"{', '.join(LOCAL_TASKS)}, or an lm-eval task name" + (f" (close: {', '.join(close)})" if close else "")
            )
        leaves = output_types(task)
        for leaf, kind in leaves.items():
            if kind is not None and kind not in SUPPORTED_OUTPUT_TYPES:
                raise ConfigError(
                    f"zeroshot.tasks[{i}]: {task!r}" + (f" holds {leaf!r}, which" if leaf != task else "")
                    + f" is a {kind} task (output_type {kind}, no accuracy); only loglikelihood and multiple-choice tasks "
                    "are supported: remove it, or list the group's other tasks by name"
                )
        types |= leaves | ({task: None} if task not in leaves else {})
    for task, metric in zs.get("metric", {}).items():
        if task not in types:
            raise ConfigError(f"zeroshot.metric: {task!r} is not a task of zeroshot.tasks (nor of its groups or tags); "
                              f"allowed: {', '.join(sorted(types))}")
        if types[task] is not None and metric not in METRICS_OF.get(types[task], ()):
            raise ConfigError(f"zeroshot.metric.{task}: {metric!r} is not reported by a {types[task]} task; "
                              f"allowed: {', '.join(METRICS_OF[types[task]])}")


def _bounds(config, corpus, base_dir, workflow_dir):
    spec = config["corpora"][corpus]
    try:
        return corpus_bounds(spec, base_dir, workflow_dir)
    except (CorpusError, OSError) as err:
        raise ConfigError(f"corpora.{corpus}: {err}") from None


def _check_calibration(cal, bound):
    need = cal["nsamples"] * cal["seqlen"]
    # the reference's sampler may draw every window from one long document: only the longest counts there
    if cal.get("protocol") != "reference" and need > bound.tokens:
        raise ConfigError(
            f"calibration: nsamples × seqlen = {cal['nsamples']} × {cal['seqlen']} = {need:,} tokens, but the calibration "
            f"part of corpus {cal['corpus']!r} holds at most {bound.tokens:,} ({bound.where}; a bound: one token per byte "
            f"of text); allowed: nsamples × seqlen ≤ {bound.tokens:,}: lower calibration.nsamples or calibration.seqlen, "
            "or use a larger corpus"
        )
    if bound.longest is not None and bound.longest <= cal["seqlen"]:
        raise ConfigError(
            f"calibration.seqlen: {cal['seqlen']} is not allowed for corpus {cal['corpus']!r}: a window needs a document "
            f"longer than seqlen, and its longest calibration document has at most {bound.longest} tokens "
            f"({bound.where}); allowed: seqlen below {bound.longest}, or a corpus with longer documents"
        )


def _check_perplexity(ppl, bound):
    # text tokens per window with a BOS (without one, and in the reference protocol: seqlen; the smaller need is checked)
    step = ppl["seqlen"] - 1
    windows = ppl["windows"] or 1
    need = windows * step
    if need > bound.tokens:
        raise ConfigError(
            f"perplexity: {ppl['windows'] or 'every'} window{'s' if windows != 1 else ''} of seqlen {ppl['seqlen']} need "
            f"at least {need:,} tokens, but the held-out part of corpus {ppl['corpus']!r} holds at most {bound.tokens:,} "
            f"({bound.where}; a bound: one token per byte of text); allowed: perplexity.windows × seqlen ≤ "
            f"{bound.tokens:,}: lower perplexity.windows or perplexity.seqlen, or use a larger corpus"
        )
