import sys, torch
sys.path.insert(0, ".")
from fp4mm.kernels import fp4_gemv_sm90 as S
from scripts.gpu_decode import Problem, close, time_graph
C = S.GemvSM90Config
for op, M, N, K, dt in (("nvfp4_w4a16_mm", 1, 18432, 3072, torch.float16), ("nvfp4_w4a16_mm", 1, 18432, 3072, torch.bfloat16),
                        ("nvfp4_mm", 1, 18432, 3072, None), ("nvfp4_mm", 4, 18432, 3072, None), ("nvfp4_mm", 16, 18432, 3072, None),
                        ("nvfp4_w4a16_mm", 16, 18432, 3072, torch.bfloat16), ("nvfp4_w4a16_mm", 4, 18432, 3072, torch.bfloat16),
                        ("nvfp4_mm", 1, 8192, 8192, None), ("nvfp4_w4a16_mm", 1, 8192, 8192, torch.bfloat16), ("nvfp4_mm", 5, 300, 640, None)):
    p = Problem(op, M, N, K, dtype=dt or torch.float16, copies=4)
    out = torch.empty((M, N), dtype=torch.float16, device="cuda")
    xs = p.x[1] if op == "nvfp4_mm" else None
    res = []
    tiles = {}
    for nw in (1, 2, 4):
        for rt in (1, 2):
            rows = 16 * nw * rt
            tiles[rows] = [S._tile_weight(*p.w[i], rows) for i in range(4)]
    for tiled in (False, True):
        for sp in (1, 2, 3, 4, 6):
            for nw in (1, 2, 4):
                for rt in (1, 2):
                    cfg = C(nw, 1, sp, 0, rt)
                    w = tiles[16 * nw * rt] if tiled else p.w
                    o = torch.full_like(out, float("nan"))
                    S.gemv_sm90(p.x[0], xs, *w[0], p.alpha, "low_first", o, config=cfg, tiled=tiled)
                    if not close(o, p.reference(0))[0]:
                        res.append((999, f"{'T' if tiled else 'r'} s{sp}w{nw}r{rt} FAIL")); continue
                    if N < 1000:
                        continue
                    t = time_graph([lambda i=i, cfg=cfg, w=w: S.gemv_sm90(p.x[0], xs, *w[i], p.alpha, "low_first", out, config=cfg, tiled=tiled) for i in range(4)])
                    res.append((t[0], f"{'T' if tiled else 'r'} s{sp}w{nw}r{rt}"))
    res.sort()
    nb = p.bytes_moved(torch.float16)
    fails = [n for t, n in res if t == 999]
    br = min((t for t, n in res if n.startswith("r")), default=0)
    bt = min((t for t, n in res if n.startswith("T")), default=0)
    print(f"{op} {dt} M={M} N={N} K={K}: raw {br:.2f} ({nb/br/1e3 if br else 0:.0f} GB/s) tiled {bt:.2f} ({nb/bt/1e3 if bt else 0:.0f} GB/s) fails {fails[:4]}; " + "  ".join(f"{n} {t:.2f}" for t, n in res[:6]), flush=True)
