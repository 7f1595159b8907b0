"""One pruning run of bench/noise_band.py and bench/prune_speed.py: the workflow's inputs, a prune (PruneFlow's or
the reference's) with given float settings, its perplexity, its masks' agreement, and the machine it ran on."""

from __future__ import annotations

import os

os.environ.setdefault("TQDM_DISABLE", "1")  # one JSON line per run, no progress bars

import datetime
import platform
import re
import subprocess
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from pruneflow.core.stream import load_variant
from pruneflow.data.calibration import load_calibration
from pruneflow.data.jsonl import read_texts
from pruneflow.evaluate.perplexity import eval_windows, perplexity
from pruneflow.prune.criteria import get_criterion
from pruneflow.prune.masks import parse_pattern
from pruneflow.prune.sequential import prune_model
from pruneflow.spec.naming import calib_id
from reference_shims import Reference
from reference_wanda import load_reference  # noqa: F401 (re-exported: prune_speed.py's reference)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"
MODEL = "smollm2-135m"
MASKS = ROOT / "bench/out/masks"  # the workflow-settings run's masks, compared with every other run's (not kept in git)


class Inputs:
    """The default workflow's dense model, calibration (any seed) and evaluation windows (config.yaml's)."""

    def __init__(self, config: Path = ROOT / "config.yaml"):
        self.config = yaml.safe_load(config.read_text())
        self.seed = self.config["calibration"]["seed"]
        self.dense = RESULTS / MODEL / "dense"
        tok = load_variant(self.dense)[1]
        p = self.config["perplexity"]
        self.evals = eval_windows(read_texts(RESULTS / f"corpora/{p['corpus']}/eval.jsonl"), tok, p["seqlen"], p["windows"], p["bos"])

    def calibration_id(self, seed: int) -> str:
        return calib_id({**self.config["calibration"], "seed": seed})

    def calibration(self, seed: int) -> torch.Tensor:
        path = RESULTS / MODEL / "calib" / f"{self.calibration_id(seed)}.safetensors"
        if not path.is_file():
            raise SystemExit(f"{path}: no such file; make it with `snakemake --cores 2 {path.relative_to(ROOT)}`")
        return load_calibration(path)

    def model(self, dtype: str):
        model = load_variant(self.dense)[0]
        return model.double() if dtype == "float64" else model


def keep_bits(model) -> np.ndarray:
    """Every block linear's keep-mask (weight ≠ 0, read the same way for both implementations), bit-packed."""
    parts = [m.weight.detach().ne(0).flatten() for b in model.model.layers for m in b.modules() if isinstance(m, torch.nn.Linear)]
    return np.packbits(torch.cat(parts).numpy())


def agreement(a: np.ndarray, b: np.ndarray, n: int) -> float:
    """Share of the ``n`` weights on whose keep/prune decision two bit-packed masks agree."""
    differ = int(np.unpackbits(a ^ b)[:n].sum())
    return 1 - differ / n


def prune(model, criterion: str, pattern: str, calib: torch.Tensor, batch: int, ref: Reference | None = None) -> float:
    """Prune ``model`` in place (the reference's code with ``ref``); returns the seconds it took."""
    start = time.perf_counter()
    if ref is not None:
        ref.prune(model, criterion, parse_pattern(pattern), calib)
    else:
        for _ in prune_model(model, get_criterion(criterion), parse_pattern(pattern), calib, "sequential", batch_size=batch):
            pass
    return time.perf_counter() - start


def run(criterion: str, pattern: str, settings: dict, inputs: Inputs, seed: int, ref: Reference | None = None) -> dict:
    """One run: prune with ``settings`` (threads, order, batch, dtype), then the perplexity on one thread (as the
    workflow's job). The workflow-settings run's masks are saved; every other run reports its agreement with them."""
    torch.set_num_threads(settings["threads"])
    model = inputs.model(settings["dtype"])
    calib = inputs.calibration(seed)
    calib = calib.flip(0) if settings["order"] == "reversed" else calib
    load = os.getloadavg()
    seconds = prune(model, criterion, pattern, calib, settings["batch"], ref)
    load_end = os.getloadavg()
    bits, n = keep_bits(model), sum(m.weight.numel() for b in model.model.layers for m in b.modules() if isinstance(m, torch.nn.Linear))
    torch.set_num_threads(1)
    ppl = perplexity(model, inputs.evals, batch_size=4)["perplexity"]
    out = {"perplexity": ppl, "prune_seconds": seconds, "loadavg": [load[0], load_end[0]], "kept": int(np.unpackbits(bits)[:n].sum()) / n}
    mine = MASKS / f"{inputs.calibration_id(inputs.seed)}-{criterion}-{pattern.replace(':', 'of')}.npy"
    default = ref is None and seed == inputs.seed and (settings["threads"], settings["order"], settings["batch"], settings["dtype"],
                                                        settings.get("isa", "native")) == (1, "forward", 8, "float32", "native")
    if default:
        mine.parent.mkdir(parents=True, exist_ok=True)
        np.save(mine, bits)
    elif mine.is_file():
        out["masks_agree"] = agreement(bits, np.load(mine), n)  # with the workflow-settings run of the default seed
    return out


def build() -> dict:
    """Today's date (UTC) and this checkout's commit, ``+dirty`` when the library or bench/ differ from it."""
    git = ["git", "-C", str(ROOT)]
    commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip() or "?"
    dirty = subprocess.run([*git, "status", "--porcelain", "src", "bench"], capture_output=True, text=True).stdout.strip()
    return {"date": datetime.datetime.now(datetime.timezone.utc).date().isoformat(), "commit": commit + ("+dirty" if dirty else "")}


def machine() -> dict:
    """The CPU (model, the vector flags that change float kernels), the torch build and its BLAS."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    name = re.search(r"model name\s*:\s*(.*)", info)
    flags = set((re.search(r"flags\s*:\s*(.*)", info) or re.search("(.*)", "")).group(1).split())
    wanted = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16")
    blas = re.search(r"Math Kernel Library Version ([^\n]*)|OpenBLAS[^\n]*", torch.__config__.show())
    return {"cpu": name.group(1) if name else platform.processor(), "cores": os.cpu_count(),
            "flags": [f for f in wanted if f in flags], "torch": torch.__version__, "blas": blas.group(0).strip() if blas else "?",
            "capability": torch.backends.cpu.get_cpu_capability(), "python": platform.python_version()}
