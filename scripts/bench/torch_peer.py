"""PyTorch peer of `npm run bench:model`: the same Llama4 MoE model, batch and train step in plain torch.

    OPENBLAS_NUM_THREADS=2 /usr/bin/python3 scripts/bench/torch_peer.py --batch 4 --seq 512 --steps 3 --warmup 1

Model: scripts/reference/model.py, the project's independent PyTorch implementation of torchtitan's Llama4 (the
parity reference): for-loop experts as torchtitan's non-grouped-mm path, math attention (materialised scores, as
SDPA's math backend), fp32. Train step as torchtitan's: zero grads, forward, CE (sum / valid tokens), backward,
clip_grad_norm_, expert-bias update, torch.optim.AdamW (foreach). Prints one JSON line with the median
step time and the range; the caller (scripts/bench/model.ts) turns it into tokens/s.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "reference"))

import torch  # noqa: E402

from config import build_args  # noqa: E402
from model import forward, init_params, make_model  # noqa: E402
from train import cross_entropy_loss, update_expert_bias  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--flavor", default="debugmodel")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    o = ap.parse_args()
    torch.set_num_threads(o.threads)
    torch.manual_seed(0)
    args = build_args("llama4", o.flavor, seq_len=o.seq)
    gen = torch.Generator().manual_seed(0)
    model = make_model("llama4", args, init_params("llama4", args, gen))
    V = args.vocab_size
    tokens = torch.randint(0, V, (o.batch, o.seq), generator=gen)
    labels = torch.roll(tokens, -1, dims=1)
    params = list(model.params.values())
    opt = torch.optim.AdamW(params, lr=4e-3, betas=(0.9, 0.95), eps=1e-15, weight_decay=0.1, foreach=True)
    coeff = args.moe_args.load_balance_coeff
    times = []
    for i in range(o.warmup + o.steps):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = cross_entropy_loss(forward(model, tokens), labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        if coeff is not None:
            update_expert_bias(model, coeff)
        opt.step()
        dt = time.perf_counter() - t0
        if i >= o.warmup:
            times.append(dt)
    times.sort()
    med = times[len(times) // 2] if len(times) % 2 else 0.5 * (times[len(times) // 2 - 1] + times[len(times) // 2])
    print(json.dumps({
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "openblas_num_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
        "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE"),
        "step_s_median": med,
        "step_s_min": times[0],
        "step_s_max": times[-1],
        "steps": len(times),
        "tokens_per_step": o.batch * o.seq,
        "loss": float(loss),
    }))


if __name__ == "__main__":
    main()
