"""Render the configuration reference (docs/configuration.md) from config.schema.yaml, its one source.

``python -m pruneflow.spec.reference --write`` regenerates the page; without ``--write`` it prints it.
tests/test_docs.py fails when a schema key has no description or the committed page is not this output.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

from pruneflow.spec.config import SCHEMA_PATH

PAGE = Path(__file__).resolve().parents[3] / "docs" / "configuration.md"

INTRO = """\
# Configuration reference

<!-- Generated from src/pruneflow/spec/config.schema.yaml by `python -m pruneflow.spec.reference --write`:
     edit the schema's descriptions, not this page. -->

`config.yaml` is checked against `src/pruneflow/spec/config.schema.yaml` before any job runs: a bad value
stops the run with the key, the value and what is allowed. Files given with `--configfile` are merged
into it key by key. A `<name>` in a key is a name you choose: names of models, corpora and studies
become folder and file names under `results/`, so they match {name}.

*Default* is the value used when the key is left out. A default marked † is what the code uses without
writing it into the configuration: inside a named model, corpus or study, and in the `reconstruction`
and `retraining` settings (a recovery's path hashes the keys the configuration spells).
"""


def _value(v) -> str:
    return "`" + json.dumps(v, ensure_ascii=False) + "`" if not isinstance(v, str) else f"`{v}`"


def _type(node: dict) -> str:
    if "enum" in node:
        return "one of"
    if "oneOf" in node:
        return " or ".join(_type(n) if "const" not in n else "`" + n["const"] + "`" for n in node["oneOf"])
    types = node.get("type", "any")
    types = types if isinstance(types, list) else [types]
    if "array" in types and "items" in node:  # a list of enum values is a list of the allowed values
        item = "" if "enum" in node["items"] else f" of {_type(node['items'])}"
        types = [f"list{item}" if t == "array" else t for t in types]
    return " or ".join(types)


def _allowed(node: dict) -> str:
    parts = []
    if "enum" in node:
        parts.append(", ".join(_value(v) for v in node["enum"]))
    bounds = (("minimum", "≥"), ("exclusiveMinimum", ">"), ("maximum", "≤"), ("exclusiveMaximum", "<"))
    parts += [f"{sign} {node[k]}" for k, sign in bounds if k in node]
    if "pattern" in node:
        parts.append(f"matches `{node['pattern']}`")
    if "minItems" in node:
        parts.append(f"at least {node['minItems']} item{'s' * (node['minItems'] > 1)}")
    items = node.get("items", {})
    if isinstance(items, dict) and items:
        inner = _allowed(items)
        if inner:
            parts.append(f"items: {inner}")
    for option in node.get("oneOf", []):
        inner = _allowed(option)
        if inner:
            parts.append(inner)
    return "; ".join(parts)


def _default(node: dict, required: bool) -> str:
    if "default" in node:
        return _value(node["default"])
    if "x-default" in node:
        return _value(node["x-default"]) + " †"
    return "required" if required else ""


def keys(schema: dict, prefix: str = ""):
    """Every key below ``schema``, depth first: (dotted key, its schema node, required?)."""
    required = set(schema.get("required", []))
    for name, node in schema.get("properties", {}).items():
        key = f"{prefix}{name}"
        yield key, node, name in required
        yield from keys(node, f"{key}.")
    if isinstance(schema.get("additionalProperties"), dict):  # a mapping of names chosen by the user
        yield from keys(schema["additionalProperties"], f"{prefix}<name>.")


def missing_descriptions(schema: dict) -> list[str]:
    """Keys of the schema without a description (the reference would have an empty cell)."""
    return [key for key, node, _ in keys(schema) if not str(node.get("description", "")).strip()]


def _cell(text: str) -> str:
    """Table-cell text: a "|" would end the cell, a "<study>" would read as an HTML tag."""
    return text.replace("|", "\\|").replace("<", "&lt;").replace("\n", " ")


def _table(rows) -> list[str]:
    out = ["| key | type | default | allowed | description |", "|---|---|---|---|---|"]
    for key, node, required in rows:
        kind = "mapping" if node.get("type") == "object" else _type(node)
        out.append(f"| `{key}` | {kind} | {_default(node, required)} | {_cell(_allowed(node))} | {_cell(node.get('description', ''))} |")
    return out


def render(schema: dict) -> str:
    out = [INTRO.format(name=f"`{schema['$defs']['name']['pattern']}`"), "## Top level\n"]
    required = set(schema.get("required", []))
    out += _table((key, node, key in required) for key, node in schema["properties"].items())
    for section, node in schema["properties"].items():
        rows = list(keys(node, f"{section}."))
        if rows:
            text = node.get("description", "")
            out += [f"\n## `{section}`\n\n{text[:1].upper()}{text[1:]}.\n", *_table(rows)]
    return "\n".join(out) + "\n"


def load_schema() -> dict:
    return yaml.safe_load(SCHEMA_PATH.read_text(encoding="utf-8"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"write {PAGE.relative_to(PAGE.parents[1])}")
    args = parser.parse_args(argv)
    page = render(load_schema())
    if args.write:
        PAGE.write_text(page, encoding="utf-8")
    else:
        print(page, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
