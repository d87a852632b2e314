#!/usr/bin/env python3
"""The reference state of finemoe's tiny models from an independent implementation (llm.c style).

Reads finemoe's initial state (configuration, tokens and every initial weight tensor, written by
the finemoe_reference_initial_state program), builds the same models in PyTorch from the
definitions in docs/moe.md and src/model/model.h, runs one forward and backward in float64 with
autograd, and writes inputs, weights, logits, losses, routing counts and every parameter gradient
to the reference file that tests/unit/reference compares finemoe with.

Usage: reference.py [--add-missing] INITIAL_STATE.h5 OUT.h5   (tests/reference/regenerate.sh runs both
steps; --add-missing appends only the cases OUT lacks and leaves the groups it has untouched)
"""
import argparse
import math
import sys
from fractions import Fraction

import h5py
import numpy as np
import torch
import torch.nn.functional as F

torch.set_default_dtype(torch.float64)

LN_EPS = 1e-5  # finemoe's LayerNorm epsilon (PyTorch's default)
# Selection decisions closer than this (in probability) would make the comparison depend on
# rounding; the cases must keep every decision well clear of it.
MIN_MARGIN = 1e-9


class Config:
    """model.* and moe.* of one case, parsed from the strings finemoe stored."""

    def __init__(self, attrs):
        a = {k: (v.decode() if isinstance(v, bytes) else str(v)) for k, v in attrs.items()}
        self.d_model = int(a["model.d_model"])
        self.n_blocks = int(a["model.n_blocks"])
        self.n_heads = int(a["model.n_heads"])
        self.context = int(a["model.context"])
        self.vocab = int(a["model.vocab"])
        self.activation = a["model.activation"]
        self.tied = a["model.tied_embeddings"] == "true"
        self.moe = a["moe.enabled"] == "true"
        self.E = int(a["moe.expansion_rate"])
        self.G = int(a["moe.granularity"])
        self.routing = a["moe.routing"]
        self.group_size = int(a["moe.group_size"])
        self.capacity_factor = Fraction(a["moe.capacity_factor"])  # exact: ceil() of an exact product
        # Keys added after the first cases were written default to the model before them.
        self.shared = int(a.get("moe.shared_experts", "0"))
        self.balance = a.get("moe.balance", "aux_loss")
        top_k = int(a["moe.top_k"])
        self.top_k = top_k if top_k > 0 else self.G - self.shared  # DeepSeekMoE: routed activation G - S
        self.output_layernorm = a["moe.output_layernorm"] == "true"
        self.aux_weight = float(a["moe.aux_loss_weight"])
        self.z_weight = float(a["moe.z_loss_weight"])
        self.n_experts = self.E * self.G


def ffn(x, w1, w2, name):
    """act(x w1) w2 with w1 [..., d, pre] and w2 [..., hidden, d]; swiglu: w1's columns are
    [gate | up] (hidden each) and act = silu(gate) * up (Shazeer 2020)."""
    pre = x @ w1
    if name == "swiglu":
        gate, up = pre.chunk(2, dim=-1)
        return (F.silu(gate) * up) @ w2
    return act(pre, name) @ w2


def act(x, name):
    if name == "relu":
        return F.relu(x)
    if name == "gelu":
        return F.gelu(x, approximate="none")  # x Phi(x), the erf form
    if name == "gelu_tanh":
        return F.gelu(x, approximate="tanh")
    raise ValueError(f"unknown activation {name}")


def layer_norm(x, p, prefix):
    return F.layer_norm(x, (x.shape[-1],), p[prefix + ".weight"], p[prefix + ".bias"], eps=LN_EPS)


def attention(x, p, b, cfg):
    """Causal multi-head self-attention; qkv = x W_qkv with columns [q | k | v], head h at h*hs."""
    S, T, d = x.shape
    H = cfg.n_heads
    hs = d // H
    q, k, v = (x @ p[f"blocks.{b}.attn.qkv"]).split(d, dim=-1)

    def heads(t):
        return t.reshape(S, T, H, hs).transpose(1, 2)  # [S, H, T, hs]

    y = F.scaled_dot_product_attention(heads(q), heads(k), heads(v), is_causal=True)
    return y.transpose(1, 2).reshape(S, T, d) @ p[f"blocks.{b}.attn.out"]


class Routing:
    """What the selections of a model did: counts and the closest call."""

    def __init__(self):
        self.kept = 0
        self.dropped = 0
        self.margin = math.inf

    def close_call(self, a, b):
        self.margin = min(self.margin, abs(float(a) - float(b)))


def ceil_exact(x):
    c = math.ceil(x)
    assert c == x or c - 1 < x < c
    return c


def select_expert_choice(group, cfg, routing):
    """group [gs, n_experts] probabilities -> 0/1 mask: each expert's top-capacity tokens."""
    gs, n = group.shape
    # The routed activation G - S: with shared experts the capacity shrinks to match.
    capacity = ceil_exact(Fraction(gs * (cfg.G - cfg.shared), n) * cfg.capacity_factor)
    assert 1 <= capacity <= gs, capacity
    mask = np.zeros((gs, n))
    for e in range(n):
        order = sorted(range(gs), key=lambda i: (-group[i, e], i))  # ties: lowest global token index
        mask[order[:capacity], e] = 1
        if capacity < gs:
            routing.close_call(group[order[capacity - 1], e], group[order[capacity], e])
    routing.kept += int(mask.sum())
    return mask, None


def select_token_choice(group, cfg, routing):
    """group [gs, n_experts] selection scores (the probabilities, plus the routing bias with
    moe.balance = bias) -> 0/1 mask of the kept requests and the requests per expert (f)."""
    gs, n = group.shape
    k = cfg.top_k
    if cfg.capacity_factor == 0:
        capacity = gs  # dropless
    else:
        capacity = ceil_exact(cfg.capacity_factor * gs * k / n)
    assert 1 <= capacity <= gs, capacity
    mask = np.zeros((gs, n))
    requested = np.zeros(n)
    for i in range(gs):  # earlier tokens (lower global sequence index) claim capacity first
        order = sorted(range(n), key=lambda e: (-group[i, e], e))  # ties: lowest expert index
        if k < n:
            routing.close_call(group[i, order[k - 1]], group[i, order[k]])
        for e in order[:k]:
            requested[e] += 1
            if requested[e] <= capacity:
                mask[i, e] = 1
            else:
                routing.dropped += 1
    routing.kept += int(mask.sum())
    return mask, requested


def moe(x, p, b, cfg, loss_scale, routing):
    """The MoE FFN of block b on x [S, T, d]; returns (y, this layer's auxiliary objective)."""
    S, T, d = x.shape
    pre = f"blocks.{b}.moe."
    n, gs = cfg.n_experts, cfg.group_size
    logits = x @ p[pre + "router"]  # [S, T, n]
    probs = torch.softmax(logits, dim=-1)
    aux = torch.zeros(())
    select = select_expert_choice if cfg.routing == "expert_choice" else select_token_choice
    probs_np = probs.detach().numpy()
    if cfg.routing == "token_choice" and cfg.balance == "bias":
        # Loss-free balancing: select on p + bias; the gates below stay p; no balance loss.
        probs_np = probs_np + p[pre + "router_bias"].detach().numpy()
    mask = np.zeros((S, T, n))
    # A routing group: the tokens at one position of sequences [g gs, (g+1) gs), in sequence order.
    for g in range(S // gs):
        rows = slice(g * gs, (g + 1) * gs)
        for t in range(T):
            m, requested = select(probs_np[rows, t, :], cfg, routing)
            mask[rows, t, :] = m
            if cfg.routing == "token_choice" and cfg.aux_weight > 0 and cfg.balance == "aux_loss":
                f = torch.tensor(requested / (gs * cfg.top_k))  # a count: no gradient
                P = probs[rows, t, :].mean(dim=0)
                balance = n * (f * P).sum()
                aux = aux + cfg.aux_weight * loss_scale * gs * balance
    if cfg.routing == "token_choice" and cfg.z_weight > 0:
        aux = aux + cfg.z_weight * loss_scale * (torch.logsumexp(logits, dim=-1) ** 2).sum()
    gates = probs * torch.tensor(mask)  # [S, T, n]: the probability itself where selected, else 0
    # Every expert on every token, then weighted by the (mostly zero) gates.
    w1, w2 = p[pre + "experts.w1"], p[pre + "experts.w2"]
    out = torch.stack([ffn(x, w1[e], w2[e], cfg.activation) for e in range(n)])  # [n, S, T, d]
    y = torch.einsum("ste,estd->std", gates, out)
    if cfg.shared > 0:
        # S always-on experts of the routed width, weight 1, each computed on its own: finemoe
        # stores them as one FFN of width S * d_expert (swiglu: [all gates | all ups]).
        sw1, sw2 = p[pre + "shared.w1"], p[pre + "shared.w2"]
        de = sw2.shape[0] // cfg.shared
        for s in range(cfg.shared):
            if cfg.activation == "swiglu":
                cols = list(range(s * de, (s + 1) * de)) + list(range((cfg.shared + s) * de, (cfg.shared + s + 1) * de))
            else:
                cols = list(range(s * de, (s + 1) * de))
            y = y + ffn(x, sw1[:, cols], sw2[s * de:(s + 1) * de, :], cfg.activation)
    if cfg.output_layernorm:
        y = layer_norm(y, p, pre + "out_ln")
    return y, aux


def dense_ffn(x, p, b, cfg):
    return ffn(x, p[f"blocks.{b}.ffn.w1"], p[f"blocks.{b}.ffn.w2"], cfg.activation)


def forward(p, inputs, targets, cfg, loss_scale, routing):
    """Returns logits [S*T, vocab], the cross-entropy objective and the auxiliary objective."""
    S, T = inputs.shape
    x = p["embed.token"][inputs] + p["embed.position"][:T].unsqueeze(0)
    aux = torch.zeros(())
    for b in range(cfg.n_blocks):
        x = x + attention(layer_norm(x, p, f"blocks.{b}.ln1"), p, b, cfg)
        h = layer_norm(x, p, f"blocks.{b}.ln2")
        if cfg.moe:
            y, a = moe(h, p, b, cfg, loss_scale, routing)
            aux = aux + a
        else:
            y = dense_ffn(h, p, b, cfg)
        x = x + y
    x = layer_norm(x, p, "ln_f")
    head = p["embed.token"].T if cfg.tied else p["head.weight"]
    logits = (x @ head).reshape(S * T, cfg.vocab)
    ce = F.cross_entropy(logits, targets.reshape(-1), reduction="sum") * loss_scale
    return logits, ce, aux


def run_case(src, dst):
    cfg = Config(src["config"].attrs)
    loss_scale = float(src.attrs["loss_scale"])
    names = [n.decode() if isinstance(n, bytes) else n for n in src["parameter_names"][()]]
    p = {n: torch.tensor(src["weights"][n][()], requires_grad=True) for n in names}
    inputs = torch.tensor(src["inputs"][()], dtype=torch.long)
    targets = torch.tensor(src["targets"][()], dtype=torch.long)
    assert abs(loss_scale * inputs.numel() - 1) < 1e-15

    routing = Routing()
    logits, ce, aux = forward(p, inputs, targets, cfg, loss_scale, routing)
    objective = ce + aux
    objective.backward()

    src.copy(src["config"], dst, "config")
    for key in ("inputs", "targets"):
        dst.create_dataset(key, data=src[key][()])
    dst.create_dataset("parameter_names", data=names, dtype=h5py.string_dtype())
    dst.attrs["n_seq"] = np.int64(src.attrs["n_seq"])
    dst.attrs["loss_scale"] = loss_scale
    weights, grads = dst.create_group("weights"), dst.create_group("grads")
    for n in names:
        weights.create_dataset(n, data=src["weights"][n][()])
        # A tensor outside autograd's graph (the routing bias: selection only) has gradient 0.
        grad = p[n].grad if p[n].grad is not None else torch.zeros_like(p[n])
        grads.create_dataset(n, data=grad.numpy())
    dst.create_dataset("logits", data=logits.detach().numpy())
    dst.attrs["loss"] = ce.item()  # mean cross-entropy over the tokens
    dst.attrs["aux_loss"] = aux.item()  # sum over layers of the weighted auxiliary losses
    dst.attrs["objective"] = objective.item()  # what the gradients are of
    if cfg.moe:
        dst.attrs["kept_assignments"] = np.int64(routing.kept)
        dst.attrs["dropped_assignments"] = np.int64(routing.dropped)
        dst.attrs["selection_margin"] = routing.margin
        assert routing.margin > MIN_MARGIN, f"a selection is decided by {routing.margin:.3g}: change the case"
    return f"loss {ce.item():.6f} aux {aux.item():.3g} kept {routing.kept} dropped {routing.dropped} " \
           f"closest selection {routing.margin:.3g}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("initial_state", help="written by finemoe_reference_initial_state")
    parser.add_argument("out", help="the reference file (tests/reference/reference_state.h5)")
    parser.add_argument("--add-missing", action="store_true",
                        help="append the cases OUT lacks; the groups it has are not touched")
    args = parser.parse_args()
    with h5py.File(args.initial_state, "r") as src, h5py.File(args.out, "a" if args.add_missing else "w") as dst:
        if not args.add_missing:
            dst.attrs["generator"] = "tests/reference/reference.py (PyTorch autograd, float64)"
            dst.attrs["torch_version"] = str(torch.__version__)
        for name in src:
            if name in dst:
                print(f"{name}: kept as it is", file=sys.stderr)
                continue
            group = dst.create_group(name)
            group.attrs["torch_version"] = str(torch.__version__)
            summary = run_case(src[name], group)
            print(f"{name}: {summary}", file=sys.stderr)


if __name__ == "__main__":
    main()
