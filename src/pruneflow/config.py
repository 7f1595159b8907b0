"""Check a workflow configuration before any job runs.

Errors name the key, the bad value and what is allowed, e.g.
``studies.sweep.patterns[1]: 1.5 is not allowed: a sparsity ratio must be in [0, 1) ...``.
"""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import yaml

from .patterns import PatternError, parse_pattern
from .experiments import STRUCTURED_CRITERIA, parse_recovery
from .registry import CRITERIA

SCHEMA_PATH = Path(__file__).with_name("config.schema.yaml")


class ConfigError(ValueError):
    pass


def _key(path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _schema_error(err: jsonschema.ValidationError) -> ConfigError:
    key = _key(err.absolute_path)
    if err.validator == "enum":
        allowed = ", ".join(map(str, err.validator_value))
        return ConfigError(f"{key}: {err.instance!r} is not allowed; allowed: {allowed}")
    if err.validator == "additionalProperties":
        allowed = ", ".join(sorted(err.schema.get("properties", {}))) or "(none: any name with a mapping)"
        return ConfigError(f"{key}: {err.message}; allowed keys: {allowed}")
    return ConfigError(f"{key}: {err.instance!r} is not allowed: {err.message}")


def validate_config(config: dict, base_dir: str | Path = ".") -> None:
    """Raise :class:`ConfigError` on the first problem; ``base_dir`` resolves relative paths."""
    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(config), key=lambda e: list(e.absolute_path))
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
    for name, study in config["studies"].items():
        if study.get("kind") == "structured":
            _check_structured(f"studies.{name}", study)
            continue
        if study.get("kind") == "recovery":
            if "recoveries" not in study:
                raise ConfigError(f"studies.{name}: a recovery study needs 'recoveries' (none, retrain:norms, recon:sublayer, ...)")
            for i, spec in enumerate(study["recoveries"]):
                try:
                    parse_recovery(spec)
                except ValueError as err:
                    raise ConfigError(f"studies.{name}.recoveries[{i}]: {spec!r} is not allowed: {err}") from None
        if "patterns" not in study:
            raise ConfigError(f"studies.{name}: an unstructured study needs 'patterns' (ratios such as 0.5, or N:M such as 2:4)")
        for i, crit in enumerate(study["criteria"]):
            if crit not in CRITERIA:
                raise ConfigError(f"studies.{name}.criteria[{i}]: {crit!r} is not allowed; allowed: {', '.join(CRITERIA)}")
        for i, pat in enumerate(study["patterns"]):
            try:
                parse_pattern(pat)
            except PatternError as err:
                raise ConfigError(f"studies.{name}.patterns[{i}]: {pat!r} is not allowed: {err}") from None
        if study.get("stream") == "dense" and "sparsegpt" in study["criteria"] and not cache_grams(config):
            raise ConfigError(
                f"studies.{name}: sparsegpt on the dense stream needs the cached Gram matrices, but activations.gram "
                "is false; allowed: activations.gram: true, or stream: sequential"
            )


def cache_grams(config: dict) -> bool:
    """Whether the dense-stream activation cache stores Gram matrices (default true)."""
    return config.get("activations", {}).get("gram", True)


def _check_structured(key, study):
    for field in ("ratios", "reconstructions"):
        if field not in study:
            raise ConfigError(f"{key}: a structured study needs {field!r}")
    for i, crit in enumerate(study["criteria"]):
        if crit not in STRUCTURED_CRITERIA:
            raise ConfigError(f"{key}.criteria[{i}]: {crit!r} is not allowed; allowed: {', '.join(STRUCTURED_CRITERIA)}")


def _check_reference(key, value, table, table_key):
    if value not in table:
        raise ConfigError(f"{key}: {value!r} is not defined; allowed: {', '.join(table)} (the keys of {table_key})")


def _check_model(key, spec, base: Path):
    needs = {"local": "path", "hub": "id"}.get(spec["source"])
    if needs and needs not in spec:
        raise ConfigError(f"{key}: source {spec['source']!r} needs {needs!r}")
    if spec["source"] == "gguf" and ("path" in spec) == ("package" in spec):
        raise ConfigError(f"{key}: source 'gguf' needs exactly one of 'path' (a .gguf file) or 'package' (an installed package carrying one)")
    if spec["source"] == "local":
        path = base / Path(spec["path"]).expanduser()
        if not (path / "config.json").is_file():
            raise ConfigError(
                f"{key}.path: {spec['path']!r} is not a Hugging Face model folder (no config.json at {path}); "
                "allowed: a folder written by save_pretrained"
            )


def _check_model_supported(config: dict, base: Path) -> None:
    """The selected model's family must be one PruneFlow can prune: checked from its config alone,
    once (skipped when results/<model>/dense was made from this very spec)."""
    name = config["model"]
    spec = config["models"][name]
    made = base / "results" / name / "dense" / "summary.json"
    if made.is_file() and json.loads(made.read_text()).get("source") == spec:
        return
    from .architectures import UnsupportedModelError
    from .models import ModelSourceError, check_model_supported

    try:
        check_model_supported(spec, base)
    except (UnsupportedModelError, ModelSourceError) as err:
        raise ConfigError(f"models.{name}: {err}") from None


def _check_corpus(key, spec, base: Path):
    source = spec["source"]
    if source in ("text", "jsonl"):
        if "path" not in spec:
            raise ConfigError(f"{key}: source {source!r} needs 'path'")
        if not (base / spec["path"]).is_file():
            raise ConfigError(f"{key}.path: {spec['path']!r} does not exist; allowed: a readable {source} file")
    if source == "hf" and "name" not in spec:
        raise ConfigError(f"{key}: source 'hf' needs 'name' (for example c4 or wikitext-2-raw-v1)")
