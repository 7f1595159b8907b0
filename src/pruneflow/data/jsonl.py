"""Documents stored as JSON lines, one ``{"text": ...}`` object a line."""

import json
from pathlib import Path


def read_texts(path) -> list[str]:
    return [json.loads(line)["text"] for line in Path(path).read_text().splitlines() if line.strip()]
