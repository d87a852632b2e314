#!/usr/bin/env python3
"""Reference optimum of finemoe-analyze's fit objective, computed independently of it (SciPy).

    pip install numpy scipy   # not installed by scripts/install-deps.sh: this is an offline tool
    scripts/reference-fit.py RUNS.csv [RUNS.csv ...] [--starts 400] > reference_costs.csv

RUNS.csv: lines `law,run,N,D,G,loss` (law moe or dense; `#` lines are comments). For each file and
law it minimises the objective of docs/analysis.md with the paper preset and the default options,

    cost(p) = 1/2 sum_i huber(r_i),  r_i = c + a/N^alpha + g/(G^gamma N^alpha) + b/D^beta - loss_i,
    huber(r) = r^2 for |r| <= delta, 2 delta |r| - delta^2 beyond, delta = 0.1,  c >= 0,

over p = (ln a, alpha, ln b, beta, ln g, gamma, c) (dense: no g, gamma), with L-BFGS-B and an
analytic gradient from `--starts` random starting points (ln a, ln b in [-3, 10], alpha, beta in
[0, 1.5], ln g in [-4, 6], gamma in [0, 2], c in [0, 3]), each polished once more from its end.
Prints `file,law,n_runs,cost,starts,p...` with the lowest cost; the CI test
(tests/unit/analysis/test_fit_reference.cpp) checks finemoe's cost is at most 1.001 times it.
"""
import argparse, csv, math, os, sys
import numpy as np
from scipy.optimize import minimize

DELTA = 0.1


def read_runs(path):
    lines = [l for l in open(path) if not l.startswith("#")]
    rows = list(csv.DictReader(lines))
    laws = {}
    for r in rows:
        laws.setdefault(r["law"], []).append([float(r["N"]), float(r["D"]), float(r["G"]), float(r["loss"])])
    return {law: np.array(v) for law, v in laws.items()}


def objective(data, moe):
    lnN, lnD, lnG, loss = np.log(data[:, 0]), np.log(data[:, 1]), np.log(data[:, 2]), data[:, 3]

    def f(q):
        p = q if moe else np.array([q[0], q[1], q[2], q[3], 0.0, 0.0, q[4]])
        with np.errstate(over="ignore", invalid="ignore"):
            ea = np.exp(p[0] - p[1] * lnN)
            eg = np.exp(p[4] - p[5] * lnG - p[1] * lnN) if moe else np.zeros_like(ea)
            eb = np.exp(p[2] - p[3] * lnD)
            r = p[6] + ea + eg + eb - loss
            a = np.abs(r)
            cost = 0.5 * np.where(a <= DELTA, r * r, 2 * DELTA * a - DELTA ** 2).sum()
            dr = np.where(a <= DELTA, r, DELTA * np.sign(r))
            g = np.array([(dr * ea).sum(), -(dr * lnN * (ea + eg)).sum(), (dr * eb).sum(), -(dr * lnD * eb).sum(),
                          (dr * eg).sum(), -(dr * lnG * eg).sum(), dr.sum()])
        if not (np.isfinite(cost) and np.all(np.isfinite(g))):
            return 1e30, np.zeros(len(q))
        return cost, (g if moe else g[[0, 1, 2, 3, 6]])
    return f


def fit(data, moe, starts, seed):
    f = objective(data, moe)
    rng = np.random.default_rng(seed)
    bounds = [(None, None)] * (6 if moe else 4) + [(0.0, None)]
    opts = dict(maxiter=50000, maxfun=100000, ftol=1e-16, gtol=1e-13, maxcor=30)
    best = None
    for _ in range(starts):
        q = [rng.uniform(-3, 10), rng.uniform(0, 1.5), rng.uniform(-3, 10), rng.uniform(0, 1.5)]
        if moe:
            q += [rng.uniform(-4, 6), rng.uniform(0, 2)]
        q += [rng.uniform(0, 3)]
        res = minimize(f, np.array(q), jac=True, method="L-BFGS-B", bounds=bounds, options=opts)
        res = minimize(f, res.x, jac=True, method="L-BFGS-B", bounds=bounds, options=opts)
        if best is None or res.fun < best.fun:
            best = res
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="+")
    ap.add_argument("--starts", type=int, default=400)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    print("# reference optimum of the fit objective (scripts/reference-fit.py: SciPy L-BFGS-B, "
          f"{args.starts} random starts, seed {args.seed}, Huber delta 0.1, c >= 0, no weight decay)")
    print("file,law,n_runs,cost,starts,p")
    for path in args.files:
        for law, data in sorted(read_runs(path).items()):
            best = fit(data, law == "moe", args.starts, args.seed)
            p = " ".join(f"{v:.10g}" for v in best.x)
            print(f"{os.path.basename(path)},{law},{len(data)},{best.fun:.12g},{args.starts},{p}", flush=True)


if __name__ == "__main__":
    main()
