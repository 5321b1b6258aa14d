import sys, torch, itertools
sys.path.insert(0, ".")
from fp4mm.kernels import fp4_gemv_sm90 as S
from scripts.gpu_decode import Problem, close, time_graph
C = S.GemvSM90Config
# correctness at ragged shapes for the smem ring, every stage count, masked tails
bad = n = 0
for (M, N, K), op, st in itertools.product([(1, 200, 128), (3, 77, 384), (16, 250, 3072), (5, 300, 640), (33, 96, 640)],
                                           ("nvfp4_mm", "nvfp4_w4a16_mm"), (3, 4, 8)):
    p = Problem(op, M, N, K)
    xs = p.x[1] if op == "nvfp4_mm" else None
    for cfg in (C(2, 1, 1, 0, 1, 128, st), C(1, 1, 3, 0, 2, 128, st), C(4, 1, 2, 0, 1, 128, st)):
        o = torch.full((M, N), float("nan"), device="cuda")
        S.gemv_sm90(p.x[0], xs, *p.w[0], p.alpha, "low_first", o, config=cfg)
        ok, err = close(o, p.reference(0)); n += 1
        if not ok:
            bad += 1; print("FAIL", op, M, N, K, cfg, err)
print(f"smem ring correctness {n - bad}/{n}", flush=True)
for op, M, N, K, dt in (("nvfp4_w4a16_mm", 1, 18432, 3072, torch.float16), ("nvfp4_w4a16_mm", 1, 18432, 3072, torch.bfloat16),
                        ("nvfp4_mm", 1, 18432, 3072, None), ("nvfp4_mm", 4, 18432, 3072, None), ("nvfp4_mm", 16, 18432, 3072, None),
                        ("nvfp4_w4a16_mm", 16, 18432, 3072, torch.bfloat16)):
    p = Problem(op, M, N, K, dtype=dt or torch.float16, copies=4)
    out = torch.empty((M, N), dtype=torch.float16, device="cuda")
    xs = p.x[1] if op == "nvfp4_mm" else None
    res = []
    heur = S.choose_config(M, N, K, xs is not None)
    for st in (0, 4, 8):
        for sp in (1, 2, 4):
            for nw in (1, 2):
                for rt in (1, 2):
                    cfg = C(nw, 1, sp, 0, rt, 128, st)
                    o = torch.full_like(out, float("nan"))
                    S.gemv_sm90(p.x[0], xs, *p.w[0], p.alpha, "low_first", o, config=cfg)
                    if not close(o, p.reference(0))[0]:
                        res.append((999, f"st{st}s{sp}w{nw}r{rt} FAIL")); continue
                    t = time_graph([lambda i=i, cfg=cfg: S.gemv_sm90(p.x[0], xs, *p.w[i], p.alpha, "low_first", out, config=cfg) for i in range(4)])
                    res.append((t[0], f"st{st}s{sp}w{nw}r{rt}" + ("*" if cfg == heur else "")))
    res.sort()
    h = [t for t, nm in res if nm.endswith("*")]
    b0 = min(t for t, nm in res if nm.startswith("st0"))
    print(f"{op} {dt} M={M}: heur {h[0] if h else 0:.2f} best-regring {b0:.2f}; " + "  ".join(f"{nm} {t:.2f}" for t, nm in res[:7]), flush=True)
