#!/usr/bin/env python3
"""Training-step speed of the PyTorch peer (bench/reference/finemoe_torch.py) on the CPU or a GPU.

One step = forward, backward, global-norm clipping (1.0) and AdamW (weight decay 0.1 on matrices),
as finemoe's TrainingEngine::step. --precision bf16 runs the forward under autocast (bf16 GEMM
inputs, fp32 accumulation and master weights, as finemoe's train.precision = bf16); fp32 on a GPU
keeps TF32 off, as finemoe does. Prints a table line or --json: median step time of --reps
steps after --warmup steps, tokens/s, and the load average seen.
"""
import argparse
import json
import os
import statistics
import time

import torch

import finemoe_torch as ft


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--d-model", type=int, default=512)
    ap.add_argument("--blocks", type=int, default=4)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--context", type=int, default=256)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--E", type=int, default=8)
    ap.add_argument("--G", type=int, default=4)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--group-size", type=int, default=16)
    ap.add_argument("--dense", action="store_true")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--compile", action="store_true", help="torch.compile the loss (slow to start)")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.device == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("bench_step.py: --device cuda but torch sees no GPU")
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    device = torch.device(args.device)
    load_before = os.getloadavg()
    cfg = ft.ModelConfig(d_model=args.d_model, n_blocks=args.blocks, n_heads=args.heads, context=args.context,
                         vocab=args.vocab, E=args.E, G=args.G, group_size=args.group_size, moe=not args.dense)
    # Initialised on the CPU (the same numbers on every device), then moved.
    params = {n: torch.nn.Parameter(p.detach().to(device)) for n, p in ft.init_parameters(cfg).items()}
    decay = [p for n, p in params.items() if p.dim() >= 2]
    no_decay = [p for n, p in params.items() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=2e-4, betas=(0.9, 0.95), eps=1e-8)
    gen = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, cfg.vocab, (args.batch, cfg.context + 1), generator=gen)
    inputs, targets = tokens[:, :-1].contiguous().to(device), tokens[:, 1:].contiguous().to(device)
    loss_fn = torch.compile(ft.forward) if args.compile else ft.forward

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type=args.device, dtype=torch.bfloat16, enabled=args.precision == "bf16"):
            loss = loss_fn(params, inputs, targets, cfg)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(params.values()), 1.0)
        opt.step()
        return loss.item()  # waits for the device

    for _ in range(args.warmup):
        step()
    times = []
    for _ in range(args.reps):
        t0 = time.perf_counter()
        loss = step()
        times.append(time.perf_counter() - t0)
    t = statistics.median(times)
    n_tokens = args.batch * cfg.context
    out = {"bench": "pytorch-step", "torch": torch.__version__, "threads": args.threads, "reps": args.reps,
           "step_s": t, "step_s_min": min(times), "step_s_max": max(times), "tokens_per_s": n_tokens / t,
           "loss": loss, "load_before": load_before[0], "load_after": os.getloadavg()[0],
           "d_model": cfg.d_model, "n_blocks": cfg.n_blocks, "vocab": cfg.vocab, "E": cfg.E, "G": cfg.G,
           "batch": args.batch, "context": cfg.context, "compiled": args.compile, "device": args.device,
           "precision": args.precision}
    if args.json:
        print(json.dumps(out))
    else:
        where = torch.cuda.get_device_name() if args.device == "cuda" else f"{args.threads} threads"
        print(f"pytorch {torch.__version__} ({where}, {args.precision}): step {t:.3f} s (median of {args.reps}; "
              f"min {min(times):.3f} max {max(times):.3f}) -> {n_tokens / t:.0f} tokens/s, loss {loss:.4f}; "
              f"load {load_before[0]:.2f}")


if __name__ == "__main__":
    main()
