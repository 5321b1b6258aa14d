import sys, torch
sys.path.insert(0, ".")
from fp4mm.kernels import fp4_gemv_sm90 as S
from scripts.gpu_decode import Problem, close, time_graph
C = S.GemvSM90Config
for op, M, N, K, g, dt in (("nvfp4_w4a16_mm", 1, 18432, 3072, 16, torch.float16), ("nvfp4_w4a16_mm", 1, 18432, 3072, 16, torch.bfloat16),
                 ("nvfp4_mm", 1, 18432, 3072, 16, None), ("nvfp4_mm", 4, 18432, 3072, 16, None), ("nvfp4_mm", 16, 18432, 3072, 16, None),
                 ("nvfp4_w4a16_mm", 16, 18432, 3072, 16, torch.bfloat16),
                 ("w4a16_mm", 1, 18432, 3072, 32, torch.float16), ("w4a16_mm", 16, 18432, 3072, 32, torch.float16),
                 ("nvfp4_mm", 1, 8192, 8192, 16, None), ("nvfp4_w4a16_mm", 1, 8192, 8192, 16, torch.bfloat16)):
    p = Problem(op, M, N, K, group=g, dtype=dt or torch.float16, copies=4)
    out = torch.empty((M, N), dtype=torch.float16, device="cuda")
    xs = p.x[1] if op == "nvfp4_mm" else None
    gs = g if op == "w4a16_mm" else None
    al = 1.0 if op == "w4a16_mm" else p.alpha
    res = []
    S._EXPERIMENT = "reduce"
    for kf in (False, True):
        for sp in (2, 3, 4, 6, 8, 12, 24):
            for nw in (1, 2, 4):
                for rt in ((1, 2) if gs is None else (1,)):
                    if not kf and sp > 4:
                        continue
                    cfg = C(nw, 1, sp, 0, rt, 128, kf)
                    o = torch.full_like(out, float("nan"))
                    S.gemv_sm90(p.x[0], xs, *p.w[0], al, "low_first", o, config=cfg, group_size=gs)
                    if not close(o, p.reference(0))[0]:
                        res.append((999, f"{'K' if kf else 'n'} s{sp}w{nw}r{rt} FAIL")); continue
                    t = time_graph([lambda i=i, cfg=cfg: S.gemv_sm90(p.x[0], xs, *p.w[i], al, "low_first", out, config=cfg, group_size=gs) for i in range(4)])
                    res.append((t[0], f"{'K' if kf else 'n'} s{sp}w{nw}r{rt}"))
    res.sort()
    base = min(t for t, n in res if n.startswith("n"))
    print(f"{op} {dt} M={M} N={N} K={K} g{g}: best n-major {base:.2f}; " + "  ".join(f"{n} {t:.2f}" for t, n in res[:6]), flush=True)
