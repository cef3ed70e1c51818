"""bf16 mixed-precision expectations for parity cases: test/fixtures/parity/<case>/expected_bf16.safetensors.

    OPENBLAS_NUM_THREADS=1 /usr/bin/python3 scripts/reference/make_bf16_fixtures.py [case ...]

Same weights and batch as the case's fp32 fixture (read from its weights/batch.safetensors), forward + backward
with model.set_matmul_dtype(torch.bfloat16): FSDP2's MixedPrecisionPolicy(param_dtype=bfloat16,
reduce_dtype=float32) on one rank — every parameter matmul on bf16 inputs with a bf16 result, fp32 master weights,
gradients arriving in fp32, norms/softmax/router scores/loss in fp32. Writes `loss`, `grad.<name>` (fp32) and per
MoE layer `route.layers.N.moe.counts`; also the fp32 loss of the same pass for the README's bf16-vs-fp32 figure.
"""
from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

torch.set_num_threads(1)

import model as ref  # noqa: E402
import st_io  # noqa: E402
from config import build_args  # noqa: E402
from make_fixtures import CASES, OUT, grad_pass  # noqa: E402

# Single-rank cases (GQA with a dense and an MoE layer; MLA with its rope-key copies) and the two cases the
# distributed parity test runs on its ranks (test/actors/bf16-distributed.test.ts).
DEFAULT = ["llama4_gqa_ropescale_top1", "dsv3_mla_yarn_softmax_top3", "llama4_shared2_train", "dsv3_groups_softmax_train"]


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().flatten(), b.double().flatten()
    return float(a @ b / (a.norm() * b.norm()))


def main(names):
    by_name = {c["name"]: c for c in CASES}
    summary = {}
    for name in names:
        case = by_name[name]
        d = os.path.join(OUT, name)
        w, _ = st_io.load(os.path.join(d, "weights.safetensors"))
        b, _ = st_io.load(os.path.join(d, "batch.safetensors"))
        args = build_args(case["model"], "custom", case["args"], case["seq_len"])
        bias = {k: v for k, v in w.items() if k.endswith("expert_bias")}
        params = {k: v for k, v in w.items() if not k.endswith("expert_bias")}
        tokens, labels = b["tokens"], b["labels"]
        ref.set_matmul_dtype(None)
        loss32, _, g32, _ = grad_pass(case, args, params, bias, tokens, labels, torch.float32)
        ref.set_matmul_dtype(torch.bfloat16)
        loss16, _, g16, rec = grad_pass(case, args, params, bias, tokens, labels, torch.float32)
        ref.set_matmul_dtype(None)
        exp = {"loss": loss16.reshape(()), "loss_fp32": loss32.reshape(())}
        for k, g in g16.items():
            exp["grad." + k] = g
        for r in rec.routes:
            exp["route." + r.layer + "counts"] = r.counts.to(torch.int64)
        meta = {"case": name, "generator": "scripts/reference/make_bf16_fixtures.py", "dtype": "float32",
                "matmul_dtype": "bfloat16"}
        st_io.save(os.path.join(d, "expected_bf16.safetensors"), exp, meta)
        summary[name] = dict(loss_bf16=float(loss16), loss_fp32=float(loss32),
                             loss_rel=abs(float(loss16) - float(loss32)) / abs(float(loss32)),
                             min_grad_cosine_vs_fp32=min(cosine(g16[k], g32[k]) for k in g16))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main(sys.argv[1:] or DEFAULT)
