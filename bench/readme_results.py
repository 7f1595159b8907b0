"""Print the README's results section from results/tables/*.csv (run after the default pipeline).

``--write`` also refreshes the README's generated blocks in place: the claims ledger between
``<!-- claims ledger -->`` and ``<!-- end claims ledger -->``, rendered from ``results/tables/claims.csv``
(the ledger the workflow's last rule wrote), so that every README statement about the papers is the
ledger's. Usage: PYTHONPATH=src .venv/bin/python bench/readme_results.py [--write] [--tables DIR]
"""

import argparse
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
TABLES = ROOT / "results" / "tables"

RECOVERY = ["method", "pattern", "recovery", "optimiser", "perplexity", "trainable_pct", "recover_s", "recover_peak_mb"]
STRUCTURED = ["criterion", "target", "ratio", "reconstruction", "damping", "damping_chosen", "params_m", "removed_params_pct",
              "perplexity", "tokens_per_s", "prune_s"]
COLUMNS = {
    "wanda_table": ["method", "pattern", "stream", "perplexity", "noise_band_pct", "measured_sparsity", "prune_s", "LLaMA-7B ppl (Wanda paper)"],
    "wanda_groups": ["method", "pattern", "stream", "perplexity", "prune_s"],
    "sparsity_sweep": ["method", "pattern", "stream", "perplexity", "measured_sparsity", "prune_s"],
    "zeroshot_table": ["method", "pattern", "perplexity", "acc_lastword", "acc_nextsentence", "acc_browncloze", "acc_mean"],
    "reconstruction_table": RECOVERY,
    "perp_table": RECOVERY,
    "liar_table": STRUCTURED,
    "liar_ablation": STRUCTURED,
    "recon_sweep": RECOVERY,
    "perp_sweep": RECOVERY,
    "liar_sweep": STRUCTURED,
}


def claims_block(tables: Path) -> str | None:
    """The ledger as the README shows it, from ``claims.csv`` in ``tables`` (None when there is none)."""
    from pruneflow.report.claims import ledger_markdown

    path = Path(tables) / "claims.csv"
    if not path.is_file():
        return None
    df = pd.read_csv(path, keep_default_na=False, na_values=[""])
    for column in ("comparison", "note", "within_band"):  # empty cells read back as NaN
        df[column] = df[column].astype(object).where(df[column].notna(), "").astype(str)
    return ledger_markdown(df)


def fill(text: str, name: str, body: str) -> str:
    """``text`` with the lines between ``<!-- name -->`` and ``<!-- end name -->`` replaced by ``body``."""
    start, end = f"<!-- {name} -->", f"<!-- end {name} -->"
    if text.count(start) != 1 or text.count(end) != 1:
        raise SystemExit(f"README: expected one {start} ... {end} block")
    before, after = text.split(start)
    return f"{before}{start}\n{body.strip()}\n{end}{after.split(end, 1)[1]}"


def print_tables(tables: Path) -> None:
    for study, columns in COLUMNS.items():
        path = tables / f"{study}.csv"
        if not path.exists():
            continue
        df = pd.read_csv(path)
        if "pattern" in df.columns:  # the dense row has no pattern
            df["pattern"] = df["pattern"].astype(object).where(df["pattern"].notna(), "-")
        print(f"**{study}**\n")
        print(df[[c for c in columns if c in df.columns]].to_markdown(index=False, floatfmt=".4g"))
        print()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", type=Path, default=TABLES)
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    parser.add_argument("--write", action="store_true", help="refresh the README's claims ledger block in place")
    args = parser.parse_args(argv)
    print_tables(args.tables)
    block = claims_block(args.tables)
    if block is not None:
        print("**claims**\n")
        print(block)
    if args.write:
        if block is None:
            sys.exit(f"{args.tables / 'claims.csv'}: no such file (run the workflow first)")
        args.readme.write_text(fill(args.readme.read_text(), "claims ledger", block))
        print(f"wrote the claims ledger block of {args.readme}", file=sys.stderr)


if __name__ == "__main__":
    main()
