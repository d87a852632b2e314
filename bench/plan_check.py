#!/usr/bin/env python3
"""Checks `finemoe-bench plan` against steps measured on this machine (bench/run-all.sh output).

Calibration, from runs other than the one predicted:
  - peak FLOP/s per device = the dense SGEMM rate each step run measured per rank (dense-eff 1);
  - GEMM efficiency per expert size = expert-gemm.json (fwd+bwd rate / dense rate);
  - alpha, beta of the shared-memory "tier" = a least-squares line through dispatch.json
    (time of one exchange against the bytes that leave the rank);
  - non-GEMM overhead = step-1rank.json (one rank, 2 threads, no all-to-all) / the model's GEMM time.
Prediction: step-ep2.json (2 ranks x 1 thread, EP = 2: all-to-all, gradient all-reduce, other
threads per rank); the check passes when the step time is within --tolerance (20%).
usage: plan_check.py RESULTS_DIR [--bench build-bench/bin/finemoe-bench]
"""
import argparse
import json
import os
import re
import subprocess
import sys


def load(d, name):
    with open(os.path.join(d, name + ".json")) as f:
        return json.load(f)


def plan(bench, args):
    out = subprocess.run([bench, "plan"] + [str(a) for a in args], check=True, capture_output=True, text=True).stdout
    rows = [l for l in out.splitlines() if l and not l.startswith("#") and not l.startswith("model")]
    f = rows[0].split()
    return {"step_s": float(f[4]), "compute_s": float(f[5]), "a2a_s": float(f[6]), "ar_s": float(f[7]),
            "comm": f[8], "text": out}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results")
    ap.add_argument("--bench", default=os.path.join(os.path.dirname(__file__), "..", "build-bench", "bin", "finemoe-bench"))
    ap.add_argument("--tolerance", type=float, default=0.2)
    a = ap.parse_args()
    disp, s1, s2 = load(a.results, "dispatch"), load(a.results, "step-1rank"), load(a.results, "step-ep2")
    gemm = os.path.join(a.results, "expert-gemm.json")

    # One exchange moves bytes_per_rank; with 2 ranks half of it leaves the rank.
    xs = [r["bytes_per_rank"] / 2 for r in disp["rows"]]
    ys = [r["exchange_s"] / 2 for r in disp["rows"]]
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    alpha = max(my - slope * mx, 1e-7)
    beta = 1 / slope
    print(f"dispatch fit: alpha {alpha * 1e6:.1f} us, beta {beta / 1e9:.2f} GB/s (bytes leaving the rank)")

    def model_args(s, devices, ep, overhead, peak_gflops):
        return ["--d-model", s["d_model"], "--blocks", s["n_blocks"], "--context", s["context"], "--vocab", s["vocab"],
                "--E", s["E"], "--G", s["G"], "--batch-tokens", s["tokens_per_step"], "--nodes", 1,
                "--gpus-per-node", devices, "--ep", ep, "--peak-tflops", peak_gflops / 1e3, "--dense-eff", 1,
                "--gemm-json", gemm, "--overhead", overhead, "--act-bytes", 4, "--grad-bytes", 4,
                "--nvlink-alpha-us", alpha * 1e6, "--nvlink-gbps", beta / 1e9, "--mem-gb", 1000]

    base = plan(a.bench, model_args(s1, 1, 1, 0, s1["dense_gflops_per_rank"]))
    overhead = s1["step_s"] / base["step_s"] - 1
    print(f"calibration on step-1rank: measured {s1['step_s']:.3f} s, GEMM model {base['step_s']:.3f} s "
          f"-> non-GEMM overhead {overhead:.3f}")
    p = plan(a.bench, model_args(s2, 2, 2, overhead, s2["dense_gflops_per_rank"]) + ["--measured-step-s", s2["step_s"]])
    err = (p["step_s"] - s2["step_s"]) / s2["step_s"]
    print(p["text"].rstrip())
    print(f"prediction for step-ep2 (2 ranks, EP 2): {p['step_s']:.3f} s (compute {p['compute_s']:.3f}, "
          f"all-to-all {p['a2a_s']:.3f}, exposed all-reduce {p['ar_s']:.3f}), measured {s2['step_s']:.3f} s "
          f"(all-to-all {s2['alltoall_s']:.3f} s): error {100 * err:+.1f}% "
          f"({'within' if abs(err) <= a.tolerance else 'OUTSIDE'} {100 * a.tolerance:.0f}%); "
          f"loads {s1['load_before']:.2f}, {s2['load_before']:.2f}")
    sys.exit(0 if abs(err) <= a.tolerance else 1)


if __name__ == "__main__":
    main()
