"""Rerun triggers beside Snakemake's modification times: what a source holds and what code a step runs.

Both are values of rule params, which Snakemake records with every output and compares when it plans (its
params trigger): an output made from other contents of a source, or by other code, is planned again, and
everything below it with it. A param is a function of what is there now, never of what a job wrote, so a
rerun records the value it was planned with and the next plan agrees (no marker files; a dry run changes
nothing on disk but this module's cache).

- :meth:`Triggers.source_checksums`: the checksum of every source file a job reads (a local model's files,
  corpus files). A file is read again only when its size, modification time, change time or inode changed,
  so an unchanged 13 GB model is not read to plan; an edit whose modification time was set back has a new
  change time and is read again.
- :meth:`Triggers.script_code`: a checksum of the pruneflow modules a rule's script may run: those it
  imports, theirs, and so on (an import inside a function counts), each by its syntax tree without
  docstrings, so editing a comment or a docstring reruns nothing.
"""

from __future__ import annotations

import ast
import json
import os
from functools import lru_cache
from pathlib import Path

import xxhash

from pruneflow.core.atomic import write_json
from pruneflow.core.provenance import file_checksum, manifest_of, module_name, record_name


class Triggers:
    """Checksums of files as they are now, cached in ``cache`` (JSON) by each file's stat."""

    def __init__(self, cache):
        self.cache = Path(cache)
        try:
            self.known = json.loads(self.cache.read_text())
        except (OSError, ValueError):  # none yet, or unreadable: it is only a cache
            self.known = {}
        self.changed = False
        self.seen = {}  # facts already checked in this process: a module is stat'ed once per plan

    def _fact(self, path, kind: str, compute):
        if (kind, path) in self.seen:
            return self.seen[kind, path]
        self.seen[kind, path] = value = self._stat_fact(path, kind, compute)
        return value

    def _stat_fact(self, path, kind: str, compute):
        st = os.stat(path)
        key, stamp = f"{kind}:{os.path.abspath(path)}", [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
        known = self.known.get(key)
        if not known or known["stat"] != stamp:
            self.known[key] = known = {"stat": stamp, "value": compute(path)}
            self.changed = True
        return known["value"]

    def save(self) -> None:
        if self.changed:
            write_json(self.cache, self.known)
            self.changed = False

    def source_checksums(self, paths) -> dict[str, str]:
        """{path: xxh3-128} of ``paths`` as they are now (a missing file: ``missing``)."""
        sums = {p: self._fact(p, "xxh3_128", file_checksum) if os.path.exists(p) else "missing" for p in sorted(map(str, paths))}
        self.save()
        return sums

    def script_code(self, script, src) -> str:
        """Checksum of the pruneflow modules (under ``src``) that ``script`` imports, directly or through others."""
        found, todo, src = set(), [Path(script)], Path(src)
        while todo:
            for name in self._fact(todo.pop(), "module", _module_facts)["imports"]:
                for path in _module_files(name, src):
                    if path not in found:
                        found.add(path)
                        todo.append(path)
        h = xxhash.xxh3_128()
        for path in sorted(found):
            h.update(f"{module_name(path)}:{self._fact(path, 'module', _module_facts)['code']}\n".encode())
        self.save()
        return h.hexdigest()


def changed_since(artifact, sums: dict[str, str]) -> list[str]:
    """Sources in ``sums`` whose checksum differs from the one ``artifact``'s manifest recorded when its job read
    them (none if there is no manifest, or it recorded nothing): for messages."""
    try:
        recorded = json.loads(manifest_of(artifact).read_text())["made_by"]["sources"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    named = {path: record_name(path) for path in sums}
    return [path for path, checksum in sums.items() if named[path] in recorded and recorded[named[path]]["xxh3_128"] != checksum]


def _module_facts(path) -> dict:
    """A module's code (xxh3-128 of its syntax tree without docstrings) and the pruneflow names it imports."""
    tree = ast.parse(Path(path).read_bytes())
    imports = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imports += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imports += [node.module] + [f"{node.module}.{a.name}" for a in node.names]  # a name may be a module
        body = getattr(node, "body", None)
        if (isinstance(body, list) and body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]  # a docstring
    code = xxhash.xxh3_128(ast.dump(tree).encode()).hexdigest()
    return {"code": code, "imports": sorted({n for n in imports if n.split(".")[0] == "pruneflow"})}


@lru_cache(maxsize=None)
def _module_files(name: str, src: Path) -> tuple[Path, ...]:
    """The files of module ``name`` and of every package above it (none for a name that is not a module)."""
    parts, files = name.split("."), []
    for i in range(1, len(parts) + 1):
        base = src.joinpath(*parts[:i])
        files += [f for f in (base.with_suffix(".py"), base / "__init__.py") if f.is_file()]
    return tuple(files)
