"""Writes tests/data/tiny_state_dict.pth and tests/data/tiny_wrapped.pth, the real torch.save
files the checkpoint reader is checked against (tests/checkpoint_errors.rs holds the expected
values). Run from the repository root: python3 scripts/make_tiny_pth.py (made with torch 2.x)."""

import collections

import torch

base = torch.arange(12, dtype=torch.float32)  # 0, 1, ..., 11
sd = collections.OrderedDict()
sd["a.weight"] = torch.arange(6, dtype=torch.float32).reshape(2, 3)
# Non-contiguous views sharing `base`'s storage: a transpose with a storage offset, and a slice.
sd["view.t"] = base.reshape(3, 4)[1:].t()  # shape (4, 2), stride (1, 4), offset 4
sd["view.slice"] = base[2:5]  # shape (3,), offset 2
sd["half"] = torch.tensor([1.5, -2.0, 0.25], dtype=torch.float16)
sd["bf16"] = torch.tensor([[1.0, -0.5]], dtype=torch.bfloat16)
sd["double"] = torch.tensor([0.125, 3.0], dtype=torch.float64)
sd["param"] = torch.nn.Parameter(torch.full((2,), 7.0))
sd["scalar"] = torch.tensor(3.5)
sd["empty"] = torch.zeros(0, 3)
torch.save(sd, "tests/data/tiny_state_dict.pth")
torch.save({"model": sd, "epoch": 3}, "tests/data/tiny_wrapped.pth")
