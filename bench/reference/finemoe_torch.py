"""finemoe's model in plain PyTorch: the peer finemoe-bench is held against (issue 10).

The same decoder-only pre-LayerNorm Transformer as src/model/model.h and the same MoE layer as
docs/moe.md (expert-choice routing by position groups, gate = softmax probability, output
LayerNorm), the same parameter names and shapes, and the same initialisation rule (truncated
normal cut at +-2 std, std = sqrt(init_scale / fan_in); the second expert matrix uses fan_in =
4 d_model). Unlike tests/reference/reference.py (every expert on every token, for exactness), the
experts here run as a user would write them for speed: the selected rows are gathered per expert
and the experts are batched GEMMs (torch.bmm over [experts, rows, ...]); no Python loop over
experts or groups.
"""
import json
import math
import os

import numpy as np
import torch
import torch.nn.functional as F

LN_EPS = 1e-5


class ModelConfig:
    def __init__(self, d_model=512, n_blocks=4, n_heads=8, context=256, vocab=8192, E=8, G=4,
                 group_size=16, capacity_factor=1.0, activation="relu", moe=True, output_layernorm=True,
                 init_scale=0.1, tied=True):
        self.d_model, self.n_blocks, self.n_heads = d_model, n_blocks, n_heads
        self.context, self.vocab = context, vocab
        self.E, self.G, self.group_size = E, G, group_size
        self.capacity_factor = capacity_factor
        self.activation, self.moe, self.output_layernorm = activation, moe, output_layernorm
        self.init_scale, self.tied = init_scale, tied

    @property
    def n_experts(self):
        return self.E * self.G

    @property
    def d_expert(self):
        return 4 * self.d_model // self.G

    @staticmethod
    def from_manifest(cfg):
        return ModelConfig(d_model=int(cfg["d_model"]), n_blocks=int(cfg["n_blocks"]), n_heads=int(cfg["n_heads"]),
                           context=int(cfg["context"]), vocab=int(cfg["vocab"]), E=int(cfg["E"]), G=int(cfg["G"]),
                           group_size=int(cfg["group_size"]), capacity_factor=float(cfg["capacity_factor"]),
                           activation=cfg["activation"], moe=bool(cfg["moe"]),
                           output_layernorm=bool(cfg["output_layernorm"]), init_scale=float(cfg["init_scale"]),
                           tied=bool(cfg["tied"]))


def parameter_specs(cfg):
    """(name, shape, fan_in or 'ones'/'zeros') in finemoe's registration order."""
    d, de, n = cfg.d_model, cfg.d_expert, cfg.n_experts
    specs = [("embed.token", (cfg.vocab, d), d), ("embed.position", (cfg.context, d), d)]
    for b in range(cfg.n_blocks):
        p = f"blocks.{b}."
        specs += [(p + "ln1.weight", (d,), "ones"), (p + "ln1.bias", (d,), "zeros"),
                  (p + "attn.qkv", (d, 3 * d), d), (p + "attn.out", (d, d), d),
                  (p + "ln2.weight", (d,), "ones"), (p + "ln2.bias", (d,), "zeros")]
        if cfg.moe:
            specs += [(p + "moe.router", (d, n), d), (p + "moe.experts.w1", (n, d, de), d),
                      (p + "moe.experts.w2", (n, de, d), 4 * d)]
            if cfg.output_layernorm:
                specs += [(p + "moe.out_ln.weight", (d,), "ones"), (p + "moe.out_ln.bias", (d,), "zeros")]
        else:
            specs += [(p + "ffn.w1", (d, 4 * d), d), (p + "ffn.w2", (4 * d, d), 4 * d)]
    specs += [("ln_f.weight", (d,), "ones"), ("ln_f.bias", (d,), "zeros")]
    if not cfg.tied:
        specs += [("head.weight", (d, cfg.vocab), d)]
    return specs


def init_parameters(cfg, seed=1, dtype=torch.float32):
    """The same rule as finemoe (not the same random stream): trunc. normal +-2 std, std^2 = s / fan_in."""
    gen = torch.Generator().manual_seed(seed)
    params = {}
    for name, shape, fan in parameter_specs(cfg):
        if fan == "ones":
            t = torch.ones(shape, dtype=dtype)
        elif fan == "zeros":
            t = torch.zeros(shape, dtype=dtype)
        else:
            std = math.sqrt(cfg.init_scale / fan)
            t = torch.empty(shape, dtype=dtype)
            torch.nn.init.trunc_normal_(t, std=std, a=-2 * std, b=2 * std, generator=gen)
        params[name] = torch.nn.Parameter(t)
    return params


def load_export(directory, dtype=torch.float32):
    """What `finemoe-bench export --out DIR` wrote: config, parameters, tokens and finemoe's loss."""
    with open(os.path.join(directory, "manifest.json")) as f:
        manifest = json.load(f)
    cfg = ModelConfig.from_manifest(manifest["config"])
    flat = np.fromfile(os.path.join(directory, "weights.bin"), dtype=np.float32)
    params = {}
    expected = {name: shape for name, shape, _ in parameter_specs(cfg)}
    for p in manifest["params"]:
        shape = tuple(int(s) for s in p["shape"])
        assert expected.get(p["name"]) == shape, f"{p['name']}: finemoe {shape}, here {expected.get(p['name'])}"
        n = int(np.prod(shape))
        off = int(p["offset"])
        params[p["name"]] = torch.nn.Parameter(torch.tensor(flat[off:off + n].reshape(shape), dtype=dtype))
    assert set(params) == set(expected), set(params) ^ set(expected)
    S, T = int(manifest["n_seq"]), cfg.context
    inputs = torch.from_numpy(np.fromfile(os.path.join(directory, "inputs.bin"), dtype=np.int32).reshape(S, T)).long()
    targets = torch.from_numpy(np.fromfile(os.path.join(directory, "targets.bin"), dtype=np.int32).reshape(S, T)).long()
    return cfg, params, inputs, targets, float(manifest["loss"])


def act(x, name):
    if name == "relu":
        return F.relu(x)
    if name in ("gelu", "gelu_tanh"):  # gelu: the erf form; gelu_tanh: the tanh approximation
        return F.gelu(x, approximate="tanh" if name == "gelu_tanh" else "none")
    raise ValueError(f"activation {name!r}: this PyTorch peer has relu, gelu, gelu_tanh")


def layer_norm(x, p, prefix):
    return F.layer_norm(x, (x.shape[-1],), p[prefix + ".weight"], p[prefix + ".bias"], eps=LN_EPS)


def attention(x, p, b, cfg):
    S, T, d = x.shape
    H = cfg.n_heads
    q, k, v = (x @ p[f"blocks.{b}.attn.qkv"]).split(d, dim=-1)

    def heads(t):
        return t.reshape(S, T, H, d // H).transpose(1, 2)

    y = F.scaled_dot_product_attention(heads(q), heads(k), heads(v), is_causal=True)
    return y.transpose(1, 2).reshape(S, T, d) @ p[f"blocks.{b}.attn.out"]


def moe(x, p, b, cfg):
    """Expert choice over routing groups (the tokens at one position of group_size sequences)."""
    S, T, d = x.shape
    pre = f"blocks.{b}.moe."
    n, gs = cfg.n_experts, cfg.group_size
    assert S % gs == 0, "sequences must be whole routing groups"
    capacity = math.ceil(gs * cfg.G / n * cfg.capacity_factor)
    xf = x.reshape(S * T, d)
    probs = torch.softmax(xf @ p[pre + "router"], dim=-1)  # [S*T, n]
    # Groups: [S/gs, gs, T, n] -> [S/gs, T, gs, n]; each expert takes its top-capacity tokens.
    grouped = probs.detach().reshape(S // gs, gs, T, n).permute(0, 2, 1, 3)
    _, top = torch.topk(grouped, capacity, dim=2, sorted=False)  # [S/gs, T, capacity, n] member index
    dev = x.device
    group_base = (torch.arange(S // gs, device=dev).view(-1, 1, 1, 1) * gs * T
                  + torch.arange(T, device=dev).view(1, -1, 1, 1))
    token = (group_base + top * T).permute(3, 0, 1, 2).reshape(n, -1)  # [n, rows per expert]: global row
    expert = torch.arange(n, device=dev).repeat_interleave(token.shape[1])
    gate = probs[token.reshape(-1), expert].reshape(n, -1, 1)  # the probability itself
    xe = xf[token]  # [n, rows, d]
    h = act(torch.bmm(xe, p[pre + "experts.w1"]), cfg.activation)
    out = torch.bmm(h, p[pre + "experts.w2"]) * gate
    # Under autocast the expert products come out bf16; the combine sums in the activations' fp32.
    y = torch.zeros_like(xf).index_add_(0, token.reshape(-1), out.reshape(-1, d).to(xf.dtype))
    y = y.reshape(S, T, d)
    if cfg.output_layernorm:
        y = layer_norm(y, p, pre + "out_ln")
    return y


def forward(p, inputs, targets, cfg):
    """Mean cross-entropy of the batch (inputs, targets [S, T])."""
    S, T = inputs.shape
    x = p["embed.token"][inputs] + p["embed.position"][:T].unsqueeze(0)
    for b in range(cfg.n_blocks):
        x = x + attention(layer_norm(x, p, f"blocks.{b}.ln1"), p, b, cfg)
        h = layer_norm(x, p, f"blocks.{b}.ln2")
        if cfg.moe:
            y = moe(h, p, b, cfg)
        else:
            y = act(h @ p[f"blocks.{b}.ffn.w1"], cfg.activation) @ p[f"blocks.{b}.ffn.w2"]
        x = x + y
    x = layer_norm(x, p, "ln_f")
    head = p["embed.token"].T if cfg.tied else p["head.weight"]
    logits = (x @ head).reshape(S * T, cfg.vocab)
    return F.cross_entropy(logits, targets.reshape(-1))
