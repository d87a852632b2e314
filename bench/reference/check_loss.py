#!/usr/bin/env python3
"""Asserts that the PyTorch peer computes finemoe's loss on finemoe's own weights and tokens.

Usage: check_loss.py EXPORT_DIR   (written by `finemoe-bench export --out EXPORT_DIR [model options]`)
The peer runs in float32 (as benchmarked) and float64; both must match finemoe's fp32 loss
within --rtol (default 1e-5; observed ~1e-7): a wrong shape, routing, gate, init scale or LayerNorm would move the
loss far more than fp32 rounding does.
"""
import argparse
import sys

import torch

import finemoe_torch as ft


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("export_dir")
    ap.add_argument("--rtol", type=float, default=1e-5)
    args = ap.parse_args()
    ok = True
    for dtype in (torch.float32, torch.float64):
        cfg, params, inputs, targets, finemoe_loss = ft.load_export(args.export_dir, dtype=dtype)
        with torch.no_grad():
            loss = ft.forward(params, inputs, targets, cfg).item()
        rel = abs(loss - finemoe_loss) / abs(finemoe_loss)
        good = rel <= args.rtol
        ok &= good
        print(f"{str(dtype):14s} peer loss {loss:.7f}  finemoe {finemoe_loss:.7f}  rel diff {rel:.2e}  "
              f"{'OK' if good else 'MISMATCH'} (rtol {args.rtol:g})")
    # At init_scale 0.1 the loss is close to ln(vocab) whatever the MoE does; show that the check
    # discriminates: the same weights with the MoE branch's routing scrambled (each expert takes
    # other tokens) must move the loss by far more than the tolerance.
    cfg, params, inputs, targets, finemoe_loss = ft.load_export(args.export_dir, dtype=torch.float64)
    with torch.no_grad():
        for name, p in params.items():
            if name.endswith("moe.router"):
                p.copy_(p.flip(1))
        wrong = ft.forward(params, inputs, targets, cfg).item()
    rel = abs(wrong - finemoe_loss) / abs(finemoe_loss)
    print(f"sensitivity: router columns reversed -> loss {wrong:.7f}, rel diff {rel:.2e} "
          f"({'discriminates' if rel > 10 * args.rtol else 'TOO CLOSE: use --init-scale 1 in the export'})")
    if cfg.moe and rel <= 10 * args.rtol:
        ok = False
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
