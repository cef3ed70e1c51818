"""torch.optim.Adam and torch.optim.AdamW on one flat fp32 parameter, for test/models/optim.test.ts.

    /usr/bin/python3 scripts/reference/make_optim_fixture.py   # writes test/fixtures/optim/adam_adamw.json

torchtitan builds `torch.optim.<name>(params, lr, betas, eps, weight_decay, fused/foreach)`: for "AdamW" the decay
is decoupled (p ← p·(1 − lr·wd)), for "Adam" it is L2, added to the gradient before the moments (g ← g + wd·p).
The lr changes every step (as the LR scheduler sets it) and the fixture records the parameter after each step.
"""
import json
import os

import torch

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(ROOT, "test", "fixtures", "optim", "adam_adamw.json")

torch.manual_seed(20261126)
N, STEPS = 7, 5
init = torch.randn(N, dtype=torch.float32)
grads = [torch.randn(N, dtype=torch.float32) * 0.3 for _ in range(STEPS)]
lrs = [1e-2 * (s + 1) / STEPS for s in range(STEPS)]
cfg = dict(betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)


def run(cls):
    p = torch.nn.Parameter(init.clone())
    opt = cls([p], lr=lrs[0], foreach=False, **cfg)
    out = []
    for s in range(STEPS):
        opt.param_groups[0]["lr"] = lrs[s]
        p.grad = grads[s].clone()
        opt.step()
        out.append(p.detach().tolist())
    return out


fixture = dict(
    torch=torch.__version__, beta1=cfg["betas"][0], beta2=cfg["betas"][1], eps=cfg["eps"],
    weight_decay=cfg["weight_decay"], init=init.tolist(), grads=[g.tolist() for g in grads], lrs=lrs,
    adam=run(torch.optim.Adam), adamw=run(torch.optim.AdamW),
)
os.makedirs(os.path.dirname(OUT), exist_ok=True)
with open(OUT, "w") as f:
    json.dump(fixture, f, indent=1)
print(f"wrote {OUT} (torch {torch.__version__})")
