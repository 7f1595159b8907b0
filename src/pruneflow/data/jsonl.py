"""Documents stored as JSON lines, one ``{"text": ...}`` object a line: the corpus splits, file artifacts
with their manifest beside them (:func:`pruneflow.core.artifacts.save_file`), checked when read."""

import json

from pruneflow.core.artifacts import ArtifactError, decode_text, fix, load_file, save_file


def save_texts(path, docs: list[str]) -> None:
    save_file(path, "".join(json.dumps({"text": d}) + "\n" for d in docs).encode())


def load_texts(path) -> list[str]:
    lines = decode_text(path, load_file(path)).splitlines()
    try:
        return [json.loads(line)["text"] for line in lines if line.strip()]
    except (ValueError, KeyError, TypeError) as err:
        raise ArtifactError(f"{path}: not JSON lines of {{\"text\": ...}} ({err!r}); {fix(path)}") from None
