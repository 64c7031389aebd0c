#!/usr/bin/env python3
"""Dev-time: writes tests/fixtures/legacy-with-optimizer.pth, a legacy (non-zip) torch.save of
{'epoch', 'state_dict', 'optimizer'} whose optimizer state (AdamW after one step) holds
storages no weight uses. The weights are fixed values the test checks exactly:
`weight` = arange(6).view(2, 3) / 8, `bias` = [-1, 2].

    python3 scripts/make_legacy_optimizer_fixture.py
"""
import os

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
