"""Loss, LR schedule, grad clipping, AdamW and the auxiliary-loss-free expert-bias update (spec §3.4, §5)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F

from model import Model, Recorder, forward, is_moe_layer


def cross_entropy_loss(logits: torch.Tensor, labels: torch.Tensor, n_valid=None) -> torch.Tensor:
    """CE sum over labels != -100 (fp32 logits) divided by the number of valid tokens (a 0-d tensor)."""
    ad = torch.promote_types(logits.dtype, torch.float32)
    total = F.cross_entropy(logits.flatten(0, 1).to(ad), labels.flatten(0, 1), reduction="sum", ignore_index=-100)
    if n_valid is None:
        n_valid = (labels != -100).sum()
    return total / torch.as_tensor(n_valid, dtype=ad)


# ---- LR schedule (§5.3) ----------------------------------------------------------------------------------------

def lr_lambda_factory(training_steps: int, warmup_steps: int, decay_ratio: Optional[float], decay_type: str,
                      min_lr_factor: float):
    W = int(warmup_steps)
    if W > training_steps:
        W = training_steps
    if decay_ratio is not None:
        Dd = round(training_steps * decay_ratio)
        if W + Dd > training_steps:
            Dd = training_steps - W
    else:
        Dd = training_steps - W
    St = training_steps + 1 - W - Dd

    def lam(s: int) -> float:
        if s < W:
            return float((s + 1) / W)
        if s < W + St:
            return 1.0
        prog = float(s + 1 - W - St) / Dd
        if decay_type == "linear":
            f = 1 - prog
        elif decay_type == "sqrt":
            f = 1 - math.sqrt(prog)
        elif decay_type == "cosine":
            f = 0.5 * (1.0 + math.cos(math.pi * prog))
        else:
            raise ValueError(decay_type)
        return min_lr_factor + (1 - min_lr_factor) * f

    return lam


# ---- clipping (§5.4) -------------------------------------------------------------------------------------------

def clip_grad_norm(grads: List[torch.Tensor], max_norm: float) -> torch.Tensor:
    norms = [torch.linalg.vector_norm(g, 2) for g in grads]
    total = torch.linalg.vector_norm(torch.stack(norms), 2)
    coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    for g in grads:
        g.mul_(coef)  # every grad, even when coef == 1
    return total


# ---- AdamW (torch.optim.AdamW, decoupled decay) ----------------------------------------------------------------

@dataclass
class AdamWConfig:
    lr: float
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.1


class AdamW:
    def __init__(self, params: Dict[str, torch.Tensor], cfg: AdamWConfig):
        self.params = params
        self.cfg = cfg
        self.state = {k: {"step": 0, "m": torch.zeros_like(v), "v": torch.zeros_like(v)} for k, v in params.items()}

    @torch.no_grad()
    def step(self, lr: float):
        c = self.cfg
        for k, p in self.params.items():
            g = p.grad
            if g is None:
                continue
            st = self.state[k]
            st["step"] += 1
            t = st["step"]
            p.mul_(1 - lr * c.weight_decay)
            st["m"].mul_(c.beta1).add_(g, alpha=1 - c.beta1)
            st["v"].mul_(c.beta2).addcmul_(g, g, value=1 - c.beta2)
            bc1 = 1 - c.beta1 ** t
            bc2 = 1 - c.beta2 ** t
            step_size = lr / bc1
            denom = (st["v"].sqrt() / math.sqrt(bc2)).add_(c.eps)
            p.addcdiv_(st["m"], denom, value=-step_size)


# ---- expert-bias update (§3.4), the optimizer pre-hook ---------------------------------------------------------

@torch.no_grad()
def update_expert_bias(model: Model, coeff: float, checkpointed_layers=()):
    a = model.args
    for i in range(a.n_layers):
        if not is_moe_layer(model.name, a, i):
            continue
        pre = f"layers.{i}.moe."
        tpe = model.buffers[pre + "tokens_per_expert"]
        t = torch.floor(tpe / 2) if i in checkpointed_layers else tpe  # the reference never checkpoints
        t = t.float()
        delta = coeff * torch.sign(t.mean() - t)
        delta = delta - delta.mean()
        eb = model.buffers[pre + "expert_bias"]
        eb.add_(delta.to(eb.dtype))
        tpe.zero_()


# ---- one train run ---------------------------------------------------------------------------------------------

@dataclass
class TrainResult:
    losses: List[float]
    grad_norms: List[float]
    lrs: List[float]
    routes: List[Recorder]


def train(model: Model, tokens, labels, steps: int, adam: AdamWConfig, lam, max_norm: float) -> TrainResult:
    opt = AdamW(model.params, adam)
    coeff = model.args.moe_args.load_balance_coeff
    res = TrainResult([], [], [], [])
    for step in range(1, steps + 1):
        for p in model.params.values():
            p.grad = None
        lr = adam.lr * lam(step - 1)
        rec = Recorder()
        logits = forward(model, tokens, rec)
        loss = cross_entropy_loss(logits, labels)
        loss.backward()
        grads = [p.grad for p in model.params.values()]
        assert all(g is not None for g in grads)
        total = clip_grad_norm(grads, max_norm)
        if coeff is not None:
            update_expert_bias(model, coeff)
        opt.step(lr)
        res.losses.append(float(loss))
        res.grad_norms.append(float(total))
        res.lrs.append(lr)
        res.routes.append(rec)
    return res
