#!/usr/bin/env python3
"""Prints what the demo measured: the fitted MoE law beside the paper's Table 1 coefficients, and
whether finer granularity helped at this scale (eval loss per shape and token budget).

    scripts/demo-summary.py ANALYSIS_DIR    (holds fit.csv and fit_runs.csv of finemoe-analyze fit)
"""
import collections
import csv
import os
import sys

PAPER_TABLE1 = {"a": 18.1, "alpha": 0.115, "b": 30.8, "beta": 0.147, "g": 2.1, "gamma": 0.58, "c": 0.47}


def coefficients(path):
    rows = {r["quantity"]: r for r in csv.DictReader(open(path)) if r["law"] == "moe"}
    print("\nMoE law here (E = 8, byte-level text: loss in nats per BYTE) beside the paper's Table 1")
    print("(E = 64, C4 with the GPT-2 tokenizer: loss in nats per TOKEN). The units differ: compare the")
    print("exponents and the sign of the granularity term, not the magnitudes.")
    print(f"  {'coef':>6} {'here':>10} {'p10':>10} {'p90':>10}   {'paper':>7}")
    for key, ref in PAPER_TABLE1.items():
        r = rows[key]
        print(f"  {key:>6} {float(r['value']):>10.4g} {float(r['p10']):>10.4g} {float(r['p90']):>10.4g}   {ref:>7}")


def granularity(path):
    table = collections.defaultdict(dict)
    for r in csv.DictReader(open(path)):
        shape = os.path.basename(os.path.dirname(r["path"])).split("-")[0]  # runs are named shape-ffn-tokens
        column = "dense" if r["law"] == "dense" else "G" + r["G"]
        table[(shape, int(float(r["D"])))][column] = float(r["loss"])
    columns = sorted({c for row in table.values() for c in row}, key=lambda c: (c != "dense", len(c), c))
    print("\nEval loss (nats/byte) per shape and token budget; the best MoE granularity of each row:")
    print(f"  {'shape':>6} {'D':>8} " + " ".join(f"{c:>7}" for c in columns) + "   best")
    wins = collections.Counter()
    for key in sorted(table, key=lambda k: (int(k[0].lstrip("d")), k[1])):
        row = table[key]
        moe = {c: v for c, v in row.items() if c != "dense"}
        best = min(moe, key=moe.get) if moe else "-"
        wins[best] += 1
        cells = " ".join(f"{row[c]:>7.3f}" if c in row else f"{'-':>7}" for c in columns)
        print(f"  {key[0]:>6} {key[1]:>8} {cells}   {best}")
    print("  best granularity counts: " + ", ".join(f"{c}: {n}" for c, n in sorted(wins.items())))


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    coefficients(os.path.join(sys.argv[1], "fit.csv"))
    granularity(os.path.join(sys.argv[1], "fit_runs.csv"))


if __name__ == "__main__":
    main()
