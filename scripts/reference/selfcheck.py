"""Self-checks of the reference (run: OPENBLAS_NUM_THREADS=1 /usr/bin/python3 scripts/reference/selfcheck.py).

1. autograd gradcheck (float64) of the MoE layer for three router configurations;
2. an independent per-token float64 NumPy recomputation of one MoE forward per router configuration;
3. LR factors of the debug configs (spec §5.3);
4. parameter counts of the torchtitan flavors (spec §1.2, §2.2) from modules built on the meta device, plus the
   derived values the spec lists (hidden sizes, RoPE scaling, YaRN range, softmax scale);
5. AdamW and clipping against torch.optim.AdamW / torch.nn.utils.clip_grad_norm_; the expert-bias update on a hand
   example; the loss against an explicit logsumexp;
6. a directional-derivative check of every fixture model's full gradient in float64;
7. the stored fixtures (logits, loss, and the training run's step-1 loss) against numpy_ref.py, a second float64
   implementation of the forward pass with per-head / per-token loops;
8. top-k tie-breaking toward the lower expert id, slots by descending score.
Exits non-zero on the first failure.
"""
from __future__ import annotations

import math
import os
import sys

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

import numpy_ref  # noqa: E402
from config import MoEArgs, build_args  # noqa: E402
from model import (Recorder, dsv3_rope_table, dsv3_softmax_scale, forward, llama4_dense_hidden,  # noqa: E402
                   llama4_expert_hidden, llama4_rope_table, make_model, moe_forward, param_shapes,
                   yarn_correction_range)
from train import (AdamW, AdamWConfig, clip_grad_norm, cross_entropy_loss, lr_lambda_factory,  # noqa: E402
                   update_expert_bias)

FAILS = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        FAILS.append(what)


# ------------------------------------------------------------------------------------------------------------------
# MoE configurations

ROUTER_CONFIGS = {
    "sigmoid_top1_shared1_sbe": dict(num_experts=4, num_shared_experts=1, score_func="sigmoid", top_k=1,
                                     score_before_experts=True),
    "sigmoid_top2_shared0_sbe_bias": dict(num_experts=6, num_shared_experts=0, score_func="sigmoid", top_k=2,
                                          score_before_experts=True),
    "softmax_top3_shared2_nosbe": dict(num_experts=8, num_shared_experts=2, score_func="softmax", top_k=3,
                                       score_before_experts=False),
    "groups4of2_sigmoid_top3_norm_scale2.5_bias": dict(num_experts=8, num_shared_experts=1, score_func="sigmoid",
                                                        top_k=3, route_norm=True, route_scale=2.5,
                                                        num_expert_groups=4, num_limited_groups=2,
                                                        score_before_experts=False),
    "groups4of2_softmax_top2_norm_sbe_bias": dict(num_experts=8, num_shared_experts=2, score_func="softmax", top_k=2,
                                                  route_norm=True, route_scale=1.5, num_expert_groups=4,
                                                  num_limited_groups=3, score_before_experts=True),
}
BIAS = {"sigmoid_top2_shared0_sbe_bias", "groups4of2_sigmoid_top3_norm_scale2.5_bias",
        "groups4of2_softmax_top2_norm_sbe_bias"}


def moe_inputs(m: MoEArgs, D, H, N, gen, bias):
    E = m.num_experts
    p = {
        "router.gate.weight": torch.randn(E, D, generator=gen, dtype=torch.float64) * 0.5,
        "experts.w1": torch.randn(E, H, D, generator=gen, dtype=torch.float64) * 0.3,
        "experts.w2": torch.randn(E, D, H, generator=gen, dtype=torch.float64) * 0.3,
        "experts.w3": torch.randn(E, H, D, generator=gen, dtype=torch.float64) * 0.3,
    }
    if m.num_shared_experts:
        Hs = H * m.num_shared_experts
        p["shared_experts.w1.weight"] = torch.randn(Hs, D, generator=gen, dtype=torch.float64) * 0.3
        p["shared_experts.w2.weight"] = torch.randn(D, Hs, generator=gen, dtype=torch.float64) * 0.3
        p["shared_experts.w3.weight"] = torch.randn(Hs, D, generator=gen, dtype=torch.float64) * 0.3
    x = torch.randn(2, N // 2, D, generator=gen, dtype=torch.float64)
    eb = (torch.randn(E, generator=gen, dtype=torch.float64) * 0.1) if bias else None
    return x, p, eb


def far_from_ties(x, p, m, eb, thr=1e-3):
    rec = Recorder()
    with torch.no_grad():
        moe_forward(x, p, "", m, eb, None, rec)
    r = rec.routes[0]
    return r.min_gap > thr and r.min_group_gap > thr, r


def np_moe(X, p, m: MoEArgs, eb):
    """numpy_ref.moe (independent per-token float64 implementation of spec §3.3) on torch inputs."""
    P = {k: np.asarray(v.detach(), dtype=np.float64) for k, v in p.items()}
    bias = None if eb is None else np.asarray(eb, dtype=np.float64)
    return numpy_ref.moe(np.asarray(X, dtype=np.float64), P, "", m, bias)


def moe_checks():
    D, H, N = 6, 5, 10
    for i, (name, kw) in enumerate(ROUTER_CONFIGS.items()):
        m = MoEArgs(**kw)
        gen = torch.Generator().manual_seed(100 + i)
        for _ in range(200):
            x, p, eb = moe_inputs(m, D, H, N, gen, name in BIAS)
            ok, r = far_from_ties(x, p, m, eb)
            if ok:
                break
        nb = f", bias changed the choice of {r.n_bias_changed}/{N} tokens" if eb is not None else ""
        # (2) NumPy recomputation, float64 and float32
        ref = np_moe(x.reshape(-1, D).numpy(), p, m, None if eb is None else eb.numpy())
        y64 = moe_forward(x, p, "", m, eb).reshape(-1, D).detach().numpy()
        rel64 = np.abs(y64 - ref).max() / np.abs(ref).max()
        p32 = {k: v.float() for k, v in p.items()}
        y32 = moe_forward(x.float(), p32, "", m, None if eb is None else eb.float()).reshape(-1, D).detach().numpy()
        rel32 = np.abs(y32 - ref).max() / np.abs(ref).max()
        check(rel64 < 1e-12 and rel32 < 1e-5,
              f"MoE forward vs NumPy [{name}]: fp64 rel {rel64:.1e}, fp32 rel {rel32:.1e} (min gap {r.min_gap:.2e}{nb})")
        # (1) gradcheck in float64 w.r.t. the input and every parameter
        keys = sorted(p)
        leaves = [x.clone().requires_grad_(True)] + [p[k].clone().requires_grad_(True) for k in keys]

        def fn(xx, *ws):
            return moe_forward(xx, dict(zip(keys, ws)), "", m, eb)

        ok = torch.autograd.gradcheck(fn, tuple(leaves), eps=1e-6, atol=1e-7, rtol=1e-5)
        check(ok, f"MoE gradcheck float64 [{name}] w.r.t. x and {len(keys)} parameters")
        # no gradient reaches the bias
        if eb is not None:
            ebg = eb.clone().requires_grad_(True)
            y = moe_forward(x, p, "", m, ebg)
            check(not y.requires_grad or torch.autograd.grad(y.sum(), ebg, allow_unused=True)[0] is None,
                  f"MoE [{name}]: no gradient reaches expert_bias")


# ------------------------------------------------------------------------------------------------------------------

def lr_checks():
    l4 = lr_lambda_factory(10, 2, 0.8, "linear", 0.1)
    ds = lr_lambda_factory(10, 2, 0.8, "linear", 0.0)
    want4 = [0.5, 1, 1, 0.8875, 0.775, 0.6625, 0.55, 0.4375, 0.325, 0.2125]
    wantd = [0.5, 1, 1, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125]
    got4 = [l4(s) for s in range(10)]
    gotd = [ds(s) for s in range(10)]
    check(all(abs(a - b) < 1e-12 for a, b in zip(got4, want4)), f"LR factors llama4 debug {[round(v, 6) for v in got4]}")
    check(all(abs(a - b) < 1e-12 for a, b in zip(gotd, wantd)), f"LR factors DSV3 debug {[round(v, 6) for v in gotd]}")
    # defaults: warmup 200, decay None → decay over T-W steps, stable 1
    d = lr_lambda_factory(1000, 200, None, "linear", 0.0)
    check(abs(d(0) - 1 / 200) < 1e-15 and d(199) == 1.0 and d(200) == 1.0 and abs(d(201) - (1 - 1 / 800)) < 1e-12
          and d(999) > 0, "LR defaults (warmup 200, decay_ratio None): virtual extra stable step, never 0")
    c = lr_lambda_factory(3, 1, 0.8, "cosine", 0.2)
    check([round(c(s), 12) for s in range(3)] == [1.0, 1.0, 0.6], "LR cosine T=3 W=1 decay 0.8 min 0.2 → 1, 1, 0.6")


def meta_count(name, flavor):
    args = build_args(name, flavor, seq_len=2048)
    mods = torch.nn.ParameterDict({k.replace(".", "/"): torch.nn.Parameter(torch.empty(s, device="meta"))
                                   for k, s in param_shapes(name, args).items()})
    return sum(p.numel() for p in mods.values()), args


def count_checks():
    for name, flavor, want in [("llama4", "debugmodel", 15_017_216), ("deepseek_v3", "debugmodel", 33_014_016),
                               ("llama4", "17bx16e", 107_769_861_120), ("llama4", "17bx128e", 400_711_848_960),
                               ("deepseek_v3", "16B", 15_706_484_224)]:
        got, _ = meta_count(name, flavor)
        check(got == want, f"param count {name} {flavor}: {got:,} (spec {want:,})")
    a = build_args("llama4", "debugmodel", seq_len=2048)
    check((llama4_dense_hidden(a), llama4_expert_hidden(a), a.dim // a.n_heads) == (768, 512, 16),
          "llama4 debugmodel dense hidden 768, expert hidden 512, head_dim 16")
    b = build_args("llama4", "17bx16e", seq_len=8192)
    check((llama4_dense_hidden(b), llama4_expert_hidden(b)) == (16384, 8192), "llama4 17B dense 16384, expert 8192")
    _, _, f = llama4_rope_table(16, 500000, a.rope_scaling_args, 16)
    base = 1.0 / (500000 ** (torch.arange(0, 16, 2)[:8].float() / 16))
    divided = [i for i in range(8) if abs(float(f[i] / base[i]) - 1 / 16) < 1e-6]
    kept = [i for i in range(8) if float(f[i]) == float(base[i])]
    check(divided == [5, 6, 7] and kept == [0, 1, 2, 3, 4], f"llama4 debugmodel RoPE: divided by 16 at {divided}")
    _, _, f = llama4_rope_table(128, 500000, b.rope_scaling_args, 16)
    base = 1.0 / (500000 ** (torch.arange(0, 128, 2)[:64].float() / 128))
    divided = [i for i in range(64) if abs(float(f[i] / base[i]) - 1 / 16) < 1e-6]
    check(divided == list(range(35, 64)), f"llama4 17B RoPE: divided by 16 for i >= {divided[0]}")
    d = build_args("deepseek_v3", "debugmodel", seq_len=2048)
    check(abs(dsv3_softmax_scale(d) - 0.0721688) < 1e-7, f"DSV3 debug softmax_scale {dsv3_softmax_scale(d):.7f}")
    d8 = build_args("deepseek_v3", "debugmodel", seq_len=8192)
    check(abs(dsv3_softmax_scale(d8) - 0.1142520) < 1e-7, f"DSV3 debug @8192 softmax_scale {dsv3_softmax_scale(d8):.7f}")
    check(yarn_correction_range(d8) == (10, 23), f"DSV3 default YaRN range {yarn_correction_range(d8)}")
    _, _, f = dsv3_rope_table(d8, 4)
    base = 1.0 / (10000 ** (torch.arange(0, 64, 2, dtype=torch.float32) / 64))
    r = (f / base).tolist()
    check(all(abs(v - 1) < 1e-6 for v in r[:11]) and all(abs(v - 1 / 40) < 1e-6 for v in r[23:])
          and all(1 / 40 < v < 1 for v in r[11:23]), "DSV3 YaRN: i<=10 unchanged, i>=23 /40, blend between")


def optimizer_checks():
    gen = torch.Generator().manual_seed(7)
    for dt in (torch.float32, torch.float64):
        ps = {f"p{i}": torch.randn(5, 3, generator=gen, dtype=dt) for i in range(3)}
        tp = [v.clone().requires_grad_(True) for v in ps.values()]
        mine = {k: v.clone().requires_grad_(True) for k, v in ps.items()}
        cfg = AdamWConfig(lr=1e-2, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1)
        opt = AdamW(mine, cfg)
        topt = torch.optim.AdamW(tp, lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
        maxd = 0.0
        for step in range(3):
            gs = [torch.randn(5, 3, generator=gen, dtype=dt) for _ in ps]
            for (k, v), t, g in zip(mine.items(), tp, gs):
                v.grad = g.clone()
                t.grad = g.clone()
            n1 = clip_grad_norm([v.grad for v in mine.values()], 1.0)
            n2 = torch.nn.utils.clip_grad_norm_(tp, 1.0)
            check(abs(float(n1) - float(n2)) <= 1e-6 * float(n2), f"clip norm vs torch ({dt}, step {step + 1})")
            lr = 1e-2 * (0.5 if step == 0 else 1.0)
            opt.step(lr)
            for gr in topt.param_groups:
                gr["lr"] = lr
            topt.step()
            maxd = max(maxd, max(float((v - t).abs().max()) for v, t in zip(mine.values(), tp)))
        check(maxd < (1e-6 if dt == torch.float32 else 1e-14), f"AdamW vs torch.optim.AdamW ({dt}): max diff {maxd:.1e}")
    # expert-bias update on a hand example
    a = build_args("llama4", "custom", dict(dim=8, n_layers=2, n_heads=2, vocab_size=8, multiple_of=8,
                                            moe_args=dict(num_experts=4)), seq_len=4)
    m = make_model("llama4", a, {k: torch.zeros(s) for k, s in param_shapes("llama4", a).items()})
    m.buffers["layers.1.moe.tokens_per_expert"].copy_(torch.tensor([5.0, 1.0, 3.0, 3.0]))
    update_expert_bias(m, 1e-3)
    got = m.buffers["layers.1.moe.expert_bias"].tolist()
    check(np.allclose(got, [-1e-3, 1e-3, 0, 0], atol=1e-10, rtol=0)
          and m.buffers["layers.1.moe.tokens_per_expert"].abs().sum() == 0, f"expert-bias update {got}")
    m.buffers["layers.1.moe.tokens_per_expert"].copy_(torch.tensor([4.0, 0.0, 0.0, 0.0]))
    update_expert_bias(m, 1e-3)
    got = (m.buffers["layers.1.moe.expert_bias"] - torch.tensor([-1e-3, 1e-3, 0, 0])).tolist()
    check(np.allclose(got, [-1.5e-3, 0.5e-3, 0.5e-3, 0.5e-3], atol=1e-9, rtol=0), f"expert-bias update centered {got}")
    # loss
    logits = torch.randn(2, 3, 5, generator=gen, dtype=torch.float64)
    labels = torch.tensor([[1, -100, 4], [0, 2, -100]])
    want = 0.0
    for b in range(2):
        for s in range(3):
            if labels[b, s] != -100:
                want += float(torch.logsumexp(logits[b, s], 0) - logits[b, s, labels[b, s]])
    got = float(cross_entropy_loss(logits, labels))
    check(abs(got - want / 4) < 1e-12, f"loss = CE sum / valid tokens ({got:.6f})")


def full_model_directional_checks():
    import make_fixtures as mf
    for case in mf.CASES:
        args = build_args(case["model"], "custom", case["args"], case["seq_len"])
        gen = torch.Generator().manual_seed(case["seed"])
        params, bias = mf.make_weights(case, args, gen)
        tokens, labels = mf.make_inputs(case, args, gen)
        m = make_model(case["model"], args, params, bias, dtype=torch.float64)
        loss = cross_entropy_loss(forward(m, tokens), labels)
        loss.backward()
        g = torch.Generator().manual_seed(1)
        v = {k: torch.randn(p.shape, generator=g, dtype=torch.float64) * p.detach().abs().mean().clamp(min=1e-3)
             for k, p in m.params.items()}
        dd = sum(float((m.params[k].grad * v[k]).sum()) for k in v)
        eps = 1e-5
        vals = []
        for sgn in (1, -1):
            m2 = make_model(case["model"], args, {k: params[k].double() + sgn * eps * v[k] for k in params}, bias,
                            dtype=torch.float64)
            with torch.no_grad():
                vals.append(float(cross_entropy_loss(forward(m2, tokens), labels)))
        fd = (vals[0] - vals[1]) / (2 * eps)
        check(abs(fd - dd) <= 1e-6 * max(abs(dd), 1e-3), f"full-model directional derivative [{case['name']}]: "
                                                          f"autograd {dd:.9f} vs central difference {fd:.9f}")


def fixture_vs_numpy_checks():
    import make_fixtures as mf
    import numpy_ref
    import st_io
    for case in mf.CASES:
        d = os.path.join(mf.OUT, case["name"])
        args = build_args(case["model"], "custom", case["args"], case["seq_len"])
        w, _ = st_io.load(os.path.join(d, "weights.safetensors"))
        b, _ = st_io.load(os.path.join(d, "batch.safetensors"))
        e, _ = st_io.load(os.path.join(d, "expected.safetensors"))
        P = {k: v.double().numpy() for k, v in w.items()}
        logits = numpy_ref.forward(case["model"], args, P, b["tokens"].numpy())
        ref = e["logits"].double().numpy()
        lrel = np.abs(logits - ref).max() / np.abs(logits).max()
        L = numpy_ref.loss(logits, b["labels"].numpy())
        rl = abs(L - float(e["loss"])) / abs(L)
        check(lrel < 2e-6 and rl < 1e-6, f"fixture {case['name']} vs NumPy float64 forward: logits rel {lrel:.1e}, "
                                         f"loss rel {rl:.1e}")


def tie_checks():
    m = MoEArgs(num_experts=4, top_k=3, score_func="sigmoid")
    from model import _select
    c = torch.tensor([[0.5, 0.7, 0.5, 0.7], [0.1, 0.1, 0.1, 0.1]])
    idx, _, _ = _select(c, m)
    check(idx.tolist() == [[1, 3, 0], [0, 1, 2]], f"top-k ties toward the lower id, slots by descending score: {idx.tolist()}")
    mg = MoEArgs(num_experts=8, top_k=2, num_expert_groups=4, num_limited_groups=2)
    c = torch.tensor([[0.3, 0.2, 0.2, 0.3, 0.25, 0.25, 0.9, 0.0]])  # group sums 0.5, 0.5, 0.5, 0.9
    idx, _, _ = _select(c, mg)
    check(idx.tolist() == [[6, 0]], f"group ties toward the lower group id: {idx.tolist()}")


if __name__ == "__main__":
    tie_checks()
    moe_checks()
    lr_checks()
    count_checks()
    optimizer_checks()
    full_model_directional_checks()
    fixture_vs_numpy_checks()
    print(f"\n{len(FAILS)} failed" if FAILS else "\nall self-checks passed")
    sys.exit(1 if FAILS else 0)
