#!/usr/bin/env python3
"""Writes tests/reference/activation_reference.h5: the FFN activations and their derivatives from
PyTorch in float64 (F.relu, F.gelu with approximate='none' and 'tanh'; derivatives by autograd) on a
grid of x in [-10, 10] with the points where the functions bend, for finemoe_activation_reference_test
(README.md). usage: activation_reference.py OUT.h5   (needs torch, h5py, numpy)"""
import sys

import h5py
import numpy as np
import torch
import torch.nn.functional as F

FUNCTIONS = {
    "relu": lambda x: F.relu(x),
    "gelu": lambda x: F.gelu(x, approximate="none"),
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
}


def main(out):
    grid = np.linspace(-10.0, 10.0, 1001)
    special = np.array([0.0, 1e-300, -1e-300, 1e-8, -1e-8, 0.5, -0.5, 1.0, -1.0, 2.7, -2.7, 30.0, -30.0])
    x_np = np.concatenate([grid, special])
    with h5py.File(out, "w") as f:
        f.attrs["torch_version"] = str(torch.__version__)
        f.create_dataset("x", data=x_np)
        for name, fn in FUNCTIONS.items():
            x = torch.tensor(x_np, dtype=torch.float64, requires_grad=True)
            y = fn(x)
            (dy,) = torch.autograd.grad(y.sum(), x)
            g = f.create_group(name)
            g.create_dataset("y", data=y.detach().numpy())
            g.create_dataset("dy_dx", data=dy.numpy())


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
