#!/usr/bin/env bash
# finemoe vs the PyTorch peer (bench/reference) on one GPU, bf16, on the ~100M-active E = 8 model of
# inputs/gpu/h100-100m.ini at G = 1 and 8: `finemoe-bench step --device cuda --precision bf16
# --cuda-graph` against `bench_step.py --device cuda --precision bf16` (autocast: bf16 GEMM inputs,
# fp32 master weights) eager and with --compile (torch.compile), alternating ROUNDS times per G so a
# change of clocks hits all three; prints the ratios of median tokens/s (finemoe / eager, finemoe /
# compiled) and writes every run's JSON into RESULTS_DIR. Called by scripts/gpu-check.sh.
# usage: scripts/bench-vs-pytorch-gpu.sh BUILD_DIR RESULTS_DIR
# env: ROUNDS (3), REPS (5), MPIEXEC (mpiexec), PYTHON (python3, with torch)
# exit: 0 done, 3 no GPU (nothing timed), 1 a run failed.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
[ $# -eq 2 ] || { echo "usage: $0 BUILD_DIR RESULTS_DIR" >&2; exit 2; }
build="$1" results="$2"
bench="$build/bin/finemoe-bench"
[ -x "$bench" ] || { echo "bench-vs-pytorch-gpu: no $bench (build finemoe-bench with CUDA first)" >&2; exit 1; }
mkdir -p "$results"
rounds="${ROUNDS:-3}" reps="${REPS:-5}" mpiexec="${MPIEXEC:-mpiexec}" py="${PYTHON:-python3}"
if ! nvidia-smi -L 2>/dev/null | grep -q GPU; then
  echo "bench-vs-pytorch-gpu: no GPU (nvidia-smi lists none): skipped"
  exit 3
fi
model=(--d-model 768 --blocks 14 --heads 12 --context 512 --vocab 256 --E 8 --batch 64)
for g in 1 8; do
  for r in $(seq "$rounds"); do
    "$mpiexec" -n 1 "$bench" step --device cuda --precision bf16 --cuda-graph "${model[@]}" --G "$g" \
      --reps "$reps" --warmup 2 --json-out "$results/vs-pytorch-finemoe-G$g-$r.json" > /dev/null
    (cd "$root/bench/reference" && "$py" bench_step.py --device cuda --precision bf16 "${model[@]}" --G "$g" \
      --reps "$reps" --warmup 2 --json) | tail -1 > "$results/vs-pytorch-torch-G$g-$r.json"
    (cd "$root/bench/reference" && "$py" bench_step.py --device cuda --precision bf16 --compile "${model[@]}" \
      --G "$g" --reps "$reps" --warmup 3 --json) | tail -1 > "$results/vs-pytorch-compiled-G$g-$r.json"
  done
done
"$py" - "$results" "$rounds" <<'PY' | tee "$results/vs-pytorch-gpu.txt"
import json, statistics, sys
d, rounds = sys.argv[1], int(sys.argv[2])
for g in (1, 8):
    fm = [json.load(open(f"{d}/vs-pytorch-finemoe-G{g}-{r}.json")) for r in range(1, rounds + 1)]
    f = statistics.median(x["tokens_per_s"] for x in fm)
    print(f"G {g}: finemoe memory peak {fm[0]['peak_bytes'] / 2**30:.2f} GiB measured vs "
          f"{fm[0]['planned_bytes'] / 2**30:.2f} GiB planned (without the CUDA allowances)")
    for kind in ("torch", "compiled"):
        pt = [json.load(open(f"{d}/vs-pytorch-{kind}-G{g}-{r}.json")) for r in range(1, rounds + 1)]
        p = statistics.median(x["tokens_per_s"] for x in pt)
        per = ", ".join(f"{a['tokens_per_s'] / b['tokens_per_s']:.2f}" for a, b in zip(fm, pt))
        label = "eager" if kind == "torch" else "torch.compile"
        print(f"G {g}: finemoe {f:.0f} tokens/s (MFU {statistics.median(x['mfu'] for x in fm):.3f}, cuda graph "
              f"{fm[0].get('cuda_graph', '?')}), pytorch {label} {p:.0f} tokens/s (torch {pt[0]['torch']}, bf16): "
              f"ratio {f / p:.2f}x (target >= 1.5x; rounds {per})")
PY
