"""The measured part of docs/reproducibility.md, written from bench/results/noise_band.json: every number on it is
read from the JSON (the table of bands, what moves each entry, the references' distance, the runs' provenance), so
the page says only what the benchmark measured. tests/test_noise_band.py checks the page against the committed JSON.

Usage: PYTHONPATH=src .venv/bin/python bench/band_page.py [--write]   (without --write: print the block)
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BANDS = ROOT / "bench/results/noise_band.json"
PAGE = ROOT / "docs/reproducibility.md"
BEGIN = "<!-- noise band: written by bench/band_page.py from bench/results/noise_band.json; do not edit -->"
END = "<!-- end noise band -->"
METHODS = {"magnitude": "magnitude", "wanda": "Wanda", "sparsegpt": "SparseGPT"}
PATTERNS = {"0.5": "50%", "4:8": "4:8", "2:4": "2:4"}
EXACT_DIGITS = 4  # "reproduces exactly": every float-order run equals the float32 number to this many digits


def entries(report: dict) -> list[dict]:
    """The table's entries: the seed-0 (config.yaml) calibration's band of every method and pattern, in table order."""
    table = [b for b in report["bands"] if b["calibration"].endswith("-s0") and "float32" in b and "band_pct" in b]
    calibration = max({b["calibration"] for b in table}, key=lambda c: sum(b["calibration"] == c for b in table))
    rank = lambda b: (list(METHODS).index(b["method"]), list(PATTERNS).index(b["pattern"]))  # noqa: E731
    return sorted((b for b in table if b["calibration"] == calibration), key=rank)


def name(b: dict) -> str:
    return f"{METHODS[b['method']]} {PATTERNS[b['pattern']]}"


def seeds(report: dict, b: dict) -> list[float]:
    """The entry's float32 number at each calibration seed of its family, seed 0 first."""
    family = b["calibration"].rsplit("-s", 1)[0]
    kin = [e for e in report["bands"] if (e["method"], e["pattern"]) == (b["method"], b["pattern"])
           and e["calibration"].rsplit("-s", 1)[0] == family and "float32" in e]
    return [e["float32"] for e in sorted(kin, key=lambda e: int(e["calibration"].rsplit("-s", 1)[1]))]


def others(b: dict) -> list[float]:
    """The float-order runs other than the float32 and float64 ones."""
    return [v for k, v in b.get("runs", {}).items() if k not in ("workflow", "dtype=float64")]


def exact(b: dict) -> bool:
    return all(f"{v:.{EXACT_DIGITS}g}" == f"{b['float32']:.{EXACT_DIGITS}g}" for v in b.get("runs", {}).values())


def pct(x: float) -> str:
    return f"{x:+.2f}%" if abs(x) >= 0.005 or x == 0 else f"{x:+.1g}%"  # a move of 0.0006% is not "0.00%"


def table(report: dict) -> str:
    rows = ["| entry | float32 (the tables') | float64 | other float orders: min – max (runs) | calibration seeds 0 / 1 / 2 |"
            " references (vs float32) | band_pct |", "|---|---|---|---|---|---|---|"]
    for b in entries(report):
        rest, seed_values = others(b), seeds(report, b)
        cells = [name(b), f"{b['float32']:.2f}", f"{b['float64']:.2f}" if "float64" in b else "-",
                 f"{min(rest):.2f} – {max(rest):.2f} ({len(rest)})" if rest else "-",
                 " / ".join(f"{v:.2f}" for v in seed_values) if len(seed_values) > 1 else "(no calibration)",
                 "; ".join(f"{r['source']}{' (reversed)' if r['order'] == 'reversed' else ''}: {r['perplexity']:.2f} "
                           f"({pct(r['vs_float32_pct'])})" for r in b.get("references", [])) or "-",
                 f"{b['band_pct']:.1f}%"]
        rows.append(f"| {' | '.join(cells)} |")
    return "\n".join(rows)


def moves(report: dict, setting: str) -> str:
    """How far the runs that changed ``setting`` (a run name's start: "isa=avx2", "cpu=") moved each inexact entry."""
    parts = []
    for b in entries(report):
        hits = [v for k, v in b.get("runs", {}).items() if k.startswith(setting)]
        if hits and not exact(b):
            parts.append(f"{name(b)} {', '.join(pct(100 * (v / b['float32'] - 1)) for v in hits)}")
    return "; ".join(parts)


def exactness(table: list[dict], report: dict) -> list[str]:
    exact_ones = [name(b) for b in table if exact(b) and len(b.get("runs", {})) > 1]
    moved = [(name(b), k) for b in table for k, v in b.get("runs", {}).items()
             if k.split("=")[0] in ("threads", "order", "batch") and v != b["float32"]]
    said = "nothing: every such run equals the float32 number exactly" if not moved else \
        "only " + ", ".join(f"{n} ({k})" for n, k in moved)
    return [f"- **Exact**: {', '.join(exact_ones)} give the same perplexity to {EXACT_DIGITS} digits under every "
            "float-order perturbation measured, float64 included.",
            f"- **Thread count, sample order and batch size** change {said}."]


def float_moves(table: list[dict], report: dict) -> list[str]:
    inexact = [b for b in table if not exact(b)]
    f64 = [b["float32_vs_float64_pct"] for b in inexact if "float32_vs_float64_pct" in b]
    out = [f"- **Float order moves** {', '.join(name(b) for b in inexact)}: float32 lies {pct(min(f64))} to "
           f"{pct(max(f64))} from float64; the AVX2 kernels move them by {moves(report, 'isa=avx2')}."] if f64 else []
    cpus = sorted({k.split("cpu=")[1] for b in table for k in b.get("runs", {}) if "cpu=" in k})
    if cpus:
        out.append(f"- **Another CPU** ({', '.join(cpus)}; the tables' runs: {report['tables_cpu']}) with the build "
                   f"named below moves them by {moves(report, 'cpu=')}.")
    worst = max((b for b in table if "seed_pct" in b), key=lambda b: b["seed_pct"])
    return out + [f"- **The calibration seed moves most**: up to {worst['seed_pct']:.1f}% ({name(worst)}); any one "
                  "float32 number is one draw of that spread."]


def reference_distances(table: list[dict], report: dict) -> list[str]:
    out = []
    for method in ("wanda", "sparsegpt"):
        refs = [(r, b) for b in table if b["method"] == method for r in b.get("references", [])]
        if not refs:
            continue
        r, b = max(refs, key=lambda t: abs(t[0]["vs_float32_pct"]))
        widened = [f"{name(e)} {e['pruneflow_pct']:.1f}% → {e['band_pct']:.1f}%" for e in table
                   if e["method"] == method and e["band_pct"] > e.get("pruneflow_pct", e["band_pct"]) + 0.05]
        out.append(f"- **The references' {METHODS[method]}** lands at most {abs(r['vs_float32_pct']):.2f}% from "
                   f"PruneFlow's float32 number ({r['source']}, {name(b)}, {r['order']} samples); it is inside every "
                   "band, which it widens where it lies outside PruneFlow's own runs"
                   f"{': ' + '; '.join(widened) if widened else ' (nowhere)'}.")
    missed = [f"{name(b)} ({', '.join(k for k, v in b['band_covers'].items() if v is False)})" for b in table
              if False in b.get("band_covers", {}).values()]
    return out + ["- **The band covers** float64, every reference's result and the other machine's result "
                  f"(`bench/results/other_machine.json`) {'for every entry' if not missed else 'except: ' + ', '.join(missed)} "
                  "(`band_covers` in the JSON)."]


def provenance(report: dict) -> list[str]:
    """Who measured the band label's runs of the table's calibration family: machine, build, date, reference version."""
    family = entries(report)[0]["calibration"].rsplit("-s", 1)[0]
    runs = [r for r in report["runs"] if r["label"] == report["band_label"] and r["calibration"].rsplit("-s", 1)[0] == family]
    builds: dict[str, set[str]] = {}
    for r in runs:
        who = "PruneFlow" if r["impl"] == "pruneflow" else f"{r['source']} {r['version'][:7] if 'version' in r else '(version not recorded)'}"
        when = f"commit {r['commit']} ({r['date']})" if "commit" in r else \
            f"build not recorded, in the file since {r['recorded_in']}"
        builds.setdefault(f"{who} on {r['cpu']}", set()).add(when)
    out = [f"- {who}: {'; '.join(sorted(when))}" for who, when in builds.items()]
    for cpu, m in sorted(report["machines"].items()):
        out.append(f"- {cpu}: {m['cores']} cores, flags {' '.join(m['flags'])} (ATen {m['capability']}), torch {m['torch']}, "
                   f"{m['blas'].split(' for ')[0].replace('Math Kernel Library Version', 'MKL')}, Python {m['python']}")
    return out + [f"- {len(runs)} runs (`runs` in the JSON, label `{report['band_label']}`) on shared machines: their "
                  "timings are not comparable."]


def render(report: dict) -> str:
    first = entries(report)[0]
    head = (f"{report['model']}, calibration `{first['calibration']}` and its seeds, {report['eval']}, "
            f"{report['stream']} stream; `band_pct` is max/min − 1 over every run below, the references' included.")
    said = [line for part in (exactness, float_moves, reference_distances) for line in part(entries(report), report)]
    return "\n".join([BEGIN, head, "", table(report), "", *said, "", "Measured by:", *provenance(report), END])


def splice(page: str, block: str) -> str:
    if BEGIN not in page or END not in page:
        raise SystemExit(f"{PAGE}: no block between {BEGIN!r} and {END!r}")
    return re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: block, page, flags=re.S)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"rewrite the block in {PAGE.relative_to(ROOT)}")
    args = parser.parse_args()
    block = render(json.loads(BANDS.read_text()))
    if not args.write:
        return print(block)
    PAGE.write_text(splice(PAGE.read_text(), block))
    print(f"wrote {PAGE.relative_to(ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
