#!/usr/bin/env python3
"""Markdown tables of a bench/run-all.sh results directory (for bench/RESULTS.md).

usage: results_table.py RESULTS_DIR
"""
import json
import os
import sys


def load(d, name):
    p = os.path.join(d, name + ".json")
    return json.load(open(p)) if os.path.exists(p) else None


def head(j):
    return (f"load {j['load_before']:.2f} before, {j['load_after']:.2f} after; {j['ranks']} rank(s) x "
            f"{j['threads_per_rank']} thread(s); median of {j['reps']} after {j['warmup']} warm-up; "
            f"OMP_WAIT_POLICY={j.get('omp_wait_policy') or 'unset'}, "
            f"OPENBLAS_THREAD_TIMEOUT={j.get('openblas_thread_timeout') or 'unset'}")


def main():
    d = sys.argv[1]
    j = load(d, "expert-gemm")
    if j:
        print(f"### expert-gemm ({head(j)})\n")
        print(f"Dense SGEMM {j['dense_m']}x{j['dense_n']}x{j['dense_k']}: {j['dense_gflops']:.1f} GFLOP/s "
              f"(median of before + after; min {j['dense_gflops_min']:.1f}, max {j['dense_gflops_max']:.1f}).\n")
        print("| G | experts | d_expert | fwd GFLOP/s | fwd+bwd GFLOP/s | fwd / dense | fwd+bwd / dense |")
        print("|---|---|---|---|---|---|---|")
        for r in j["rows"]:
            print(f"| {r['G']} | {r['experts']} | {r['d_expert']} | {r['fwd_gflops']:.1f} | {r['fwd_bwd_gflops']:.1f} | "
                  f"{r['fwd_vs_dense']:.3f} | {r['fwd_bwd_vs_dense']:.3f} |")
        print()
    j = load(d, "expert-gemm-blas")
    if j:
        print(f"### expert-gemm --schedule blas ({head(j)}): dense {j['dense_gflops']:.1f} GFLOP/s\n")
        print("| G | fwd GFLOP/s | fwd / dense |\n|---|---|---|")
        for r in j["rows"]:
            print(f"| {r['G']} | {r['fwd_gflops']:.1f} | {r['fwd_vs_dense']:.3f} |")
        print()
    j = load(d, "dispatch")
    if j:
        print(f"### dispatch ({head(j)})\n")
        print("| rows/expert | MB per rank | 2 x Alltoall ms | exchange ms | dispatch+combine ms | exchange ratio | full ratio |")
        print("|---|---|---|---|---|---|---|")
        for r in j["rows"]:
            print(f"| {r['rows_per_expert']} | {r['bytes_per_rank'] / 1e6:.2f} | {1e3 * r['alltoall_x2_s']:.3f} | "
                  f"{1e3 * r['exchange_s']:.3f} | {1e3 * r['dispatch_combine_s']:.3f} | {r['exchange_vs_alltoall']:.2f} | "
                  f"{r['dispatch_combine_vs_alltoall']:.2f} |")
        print()
    j = load(d, "moe-layer-ep2")
    if j:
        print(f"### moe-layer ({head(j)}): dense per rank {j['dense_gflops']:.1f} GFLOP/s\n")
        print("| G | experts | d_expert | fwd ms | bwd ms | GFLOP/s | vs dense | router | all-to-all | experts | other |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for r in j["rows"]:
            t = r["fwd_s"] + r["bwd_s"]
            o = 1 - (r["router_s"] + r["alltoall_s"] + r["experts_s"]) / t
            print(f"| {r['G']} | {r['experts']} | {r['d_expert']} | {1e3 * r['fwd_s']:.0f} | {1e3 * r['bwd_s']:.0f} | "
                  f"{r['gflops']:.1f} | {r['vs_dense']:.2f} | {100 * r['router_s'] / t:.1f}% | "
                  f"{100 * r['alltoall_s'] / t:.1f}% | {100 * r['experts_s'] / t:.1f}% | {100 * o:.1f}% |")
        print()
    rows = [(n, load(d, n)) for n in ("step-1rank", "step-ep2")]
    rows = [(n, j) for n, j in rows if j]
    if rows:
        print("### step\n")
        print("| run | load | step s | tokens/s | model GFLOP/s per rank | dense per rank | model / dense | counted / dense | all-to-all s |")
        print("|---|---|---|---|---|---|---|---|---|")
        for n, j in rows:
            counted = j["counted_flops_per_token"] * j["tokens_per_s"] / j["ranks"] / 1e9  # per rank
            print(f"| {n} ({j['ranks']} x {j['threads_per_rank']}, EP {j['ep']}) | {j['load_before']:.2f} | "
                  f"{j['step_s']:.3f} | {j['tokens_per_s']:.0f} | {j['model_gflops_per_rank']:.1f} | "
                  f"{j['dense_gflops_per_rank']:.1f} | {j['model_vs_dense']:.3f} | "
                  f"{counted / j['dense_gflops_per_rank']:.3f} | {j['alltoall_s']:.3f} |")
        print()


if __name__ == "__main__":
    main()
