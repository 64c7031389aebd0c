#!/usr/bin/env python3
"""Dev-time: writes tests/fixtures/legacy-with-optimizer.pth, a legacy (non-zip) torch.save of
{'epoch', 'state_dict', 'optimizer'} whose optimizer state (AdamW after one step) holds
storages no weight uses. The weights are fixed values the test checks exactly:
`weight` = arange(6).view(2, 3) / 8, `bias` = [-1, 2].
Also tests/fixtures/zip-with-script-objects.pth: the same weights in a zip torch.save next to
what training scripts store (an argparse Namespace, a numpy scalar and array, a PurePosixPath),
and tests/fixtures/zip-foreign-in-state-dict.pth, whose state dict holds a Namespace.

    python3 scripts/make_legacy_optimizer_fixture.py
"""
import argparse
import os
import pathlib

import numpy as np
import torch

out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures",
                   "legacy-with-optimizer.pth")
lin = torch.nn.Linear(3, 2)
with torch.no_grad():
    lin.weight.copy_(torch.arange(6.0).view(2, 3) / 8)
    lin.bias.copy_(torch.tensor([-1.0, 2.0]))
sd = {k: v.detach().clone() for k, v in lin.state_dict().items()}
opt = torch.optim.AdamW(lin.parameters())
lin(torch.ones(4, 3)).sum().backward()
opt.step()
torch.save({"epoch": 1, "state_dict": sd, "optimizer": opt.state_dict()}, out,
           _use_new_zipfile_serialization=False)
print(out, os.path.getsize(out), "bytes")

fx = os.path.dirname(out)
args = argparse.Namespace(lr=5e-4, model="RN50", epochs=32)
torch.save({"epoch": 7, "state_dict": sd, "args": args, "best_acc1": np.float64(12.5),
            "hist": np.zeros(3), "out_dir": pathlib.PurePosixPath("/runs/x")},
           os.path.join(fx, "zip-with-script-objects.pth"))
torch.save({"state_dict": dict(sd, extra=args)}, os.path.join(fx, "zip-foreign-in-state-dict.pth"))
for f in ("zip-with-script-objects.pth", "zip-foreign-in-state-dict.pth"):
    print(f, os.path.getsize(os.path.join(fx, f)), "bytes")
