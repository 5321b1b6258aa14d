"""Per-CTA timeline of the TMA decode GEMV (``fp4_gemv_tma_sm90``) at 16 tokens, from
``%globaltimer`` stamps, and the same grid with the decode and MMAs taken out (the TMA stream
alone): where the 21 us of the 16-token bar row go (session 28).

Usage on an sm_90 machine: ``python scripts/gpu_gemv_tma_timeline.py`` (JSON to $OUT). It patches
a copy of the kernel module (exact-text anchors: an AssertionError names one that moved), checks
the stamped kernel against the oracle (NaN-poisoned output), then for each config replays a CUDA
graph of 8 calls over 4 weight copies (each copy its own stamp buffer, so the last 4 calls are
read) and prints per call: the CTAs' start spread, the wait for the first chunk, the time spent
in later mbarrier waits, the K loop, the epilogue, the span from the first CTA's start to the last
one's end, and the gap from that end to the next call's first CTA passing its PDL wait (the
split-K reduce and the launch edge). ``stream``: the same kernel with the stage reads, decode and
MMAs removed (output not checked): the floor of this grid and ring for the weight stream.
"""

from __future__ import annotations

import json
import os
import statistics as st
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from scripts.gpu_decode import NOW_SRC, Problem, close, patched_module, time_graph  # noqa: E402

STAMPS = 8  # t0 start, tw past the PDL wait, t1 first chunk ready, wait sum, t2 loop end,
# t3 end, smid, chunks

PATCHES = [
    ("@gluon.jit\ndef _issue(",
     NOW_SRC + "@gluon.jit\ndef _smid():\n    return gl.inline_asm_elementwise("
     "\"mov.u32 $0, %smid;\", \"=r\", [], dtype=gl.int32, is_pure=False, pack=1)\n\n\n"
     "@gluon.jit\ndef _issue("),
    ("    CHUNKS_SPLIT, alpha, alpha_ptr, stride_om, stride_wsn,",
     "    CHUNKS_SPLIT, alpha, alpha_ptr, probe_ptr, stride_om, stride_wsn,"),
    ("    fence_async_shared()\n\n    if PDL:",
     "    fence_async_shared()\n    t0 = _now()\n\n    if PDL:"),
    ("    pid_n = gl.program_id(0)\n",
     "    tw = _now()\n    pid_n = gl.program_id(0)\n"),
    ("    acc = gl.zeros([BN, NT], gl.float32, mma)\n    for t in range(n_c):",
     "    acc = gl.zeros([BN, NT], gl.float32, mma)\n    t1 = tw\n    wsum = tw - tw\n"
     "    for t in range(n_c):"),
    ("        mbarrier.wait(ready.index(s), (t // STAGES) & 1)\n",
     "        ta = _now()\n        mbarrier.wait(ready.index(s), (t // STAGES) & 1)\n"
     "        tb = _now()\n        if t == 0:\n            t1 = tb\n        else:\n"
     "            wsum += tb - ta\n"),
    ("    for i in gl.static_range(STAGES):\n        mbarrier.invalidate(ready.index(i))\n",
     "    t2 = _now()\n    for i in gl.static_range(STAGES):\n"
     "        mbarrier.invalidate(ready.index(i))\n"),
    ("              ALPHA_PTR)\n",
     "              ALPHA_PTR)\n    t3 = _now()\n"
     "    base = probe_ptr + (pid_k * gl.num_programs(0) + pid_n) * 8\n"
     "    gl.store(base, t0)\n    gl.store(base + 1, tw)\n    gl.store(base + 2, t1)\n"
     "    gl.store(base + 3, wsum)\n    gl.store(base + 4, t2)\n    gl.store(base + 5, t3)\n"
     "    gl.store(base + 6, _smid().to(gl.int64))\n    gl.store(base + 7, n_c.to(gl.int64))\n"),
    (" ws, dst, M, N, chunks, per, a, alpha_ptr,\n",
     " ws, dst, M, N, chunks, per, a, alpha_ptr, PROBE[0],\n"),
    ("MAX_M = 32  # tokens", "PROBE = [None]\nMAX_M = 32  # tokens"),
]

# the stream floor: no stage reads, no decode, no MMA (the ring, barriers and refills stay)
STREAM = [(
    '        wv = w_bufs.index(s)._reinterpret(gl.int32, [BN, 32], W_VIEW)\n'
    '        xv = x_bufs.index(s)._reinterpret(gl.int32, [NT, 128], X_VIEW)\n'
    '        wd0 = wv.slice(0, 16, dim=1).load(W_WORDS)\n'
    '        wd1 = wv.slice(16, 16, dim=1).load(W_WORDS)\n'
    '        if GROUPED:\n'
    '            xa0, xa1 = xv.load(_both_steps(X_PAIRS)).reshape([NT, 2, 64])'
    '.permute((0, 2, 1)).split()\n'
    '            xa0 = gl.convert_layout(xa0, X_PAIRS, assert_trivial=True)\n'
    '            xa1 = gl.convert_layout(xa1, X_PAIRS, assert_trivial=True)\n'
    '        else:\n'
    '            xa0 = xv.slice(0, 64, dim=1).load(X_PAIRS)\n'
    '            xa1 = xv.slice(64, 64, dim=1).load(X_PAIRS)\n'
    '        if not GROUPED:\n'
    '            sv = s_bufs.index(s)._reinterpret(gl.int16, [BN, 8], _scales_view(BN))\n'
    '            sc0 = sv.slice(0, 4, dim=1).load(W_SCALES)\n'
    '            sc1 = sv.slice(4, 4, dim=1).load(W_SCALES)\n', ""), (
    '        acc = _step(acc, wd0, sc0, xa0, xa0, False, HIGH_FIRST, DTYPE, SDTYPE, BN, NT,\n'
    '                    W_WORDS, W_WORDS, a_l, b_l, 128, W_GROUP)\n'
    '        acc = _step(acc, wd1, sc1, xa1, xa1, False, HIGH_FIRST, DTYPE, SDTYPE, BN, NT,\n'
    '                    W_WORDS, W_WORDS, a_l, b_l, 128, W_GROUP)\n', "")]


def modules():
    src = open(os.path.join(os.path.dirname(__file__), "..", "fp4mm", "kernels",
                            "fp4_gemv_tma_sm90.py")).read()
    full = patched_module("fp4_gemv_tma_timeline", src, PATCHES)
    stream = patched_module("fp4_gemv_tma_stream", src, STREAM + PATCHES)
    return full, stream


def stamps_of(probe):
    """Per CTA (rows of the buffer), in microseconds from the call's first CTA start."""
    p = probe.cpu().to(torch.float64)
    t00 = float(p[:, 0].min())
    us = (p[:, :6] - t00) / 1000.0
    us[:, 3] = p[:, 3] / 1000.0  # a duration
    return us, p[:, 6].long(), p[:, 7].long(), t00


def pct(v, q):
    v = sorted(v)
    return v[min(len(v) - 1, int(q * (len(v) - 1) + 0.5))]


def stamp_buffers(cfg, N, K, copies=4):
    """One zeroed (CTAs, STAMPS) int64 buffer per weight copy for a launch of config ``cfg``
    (the launcher's grid: N / BN row blocks times the K splits)."""
    grid = -(-N // (16 * cfg.row_tiles * cfg.warps))
    chunks = K // 256
    per = -(-chunks // max(1, min(cfg.split_k, chunks)))
    split = -(-chunks // per)
    return [torch.zeros((grid * split, STAMPS), dtype=torch.int64, device="cuda")
            for _ in range(copies)]


def describe(name, mod, cfg, M, N, K, dt):
    p = Problem("nvfp4_w4a16_mm", M, N, K, dtype=dt, copies=4)
    T = mod
    probes = stamp_buffers(cfg, N, K)
    outs = [torch.empty((M, N), dtype=dt, device="cuda") for _ in range(4)]

    def call(i):
        T.PROBE[0] = probes[i]
        T.gemv_tma_sm90(p.x[0], *p.w[i], p.alpha, "low_first", outs[i], config=cfg)

    if name == "full":
        o = torch.full((M, N), float("nan"), dtype=torch.float32, device="cuda")
        T.PROBE[0] = probes[0]
        T.gemv_tma_sm90(p.x[0], *p.w[0], p.alpha, "low_first", o, config=cfg)
        ok, err = close(o, p.reference(0))
        assert ok, f"stamped kernel wrong: {cfg} rel err {err}"
    med, lo, hi = time_graph([lambda i=i: call(i) for i in range(4)])
    calls = [stamps_of(pr) for pr in probes]  # the graph's last 4 calls, in order 0..3
    rows = []
    for i, (us, sm, _nc, t00) in enumerate(calls):
        nxt = calls[(i + 1) % 4]
        span = float(us[:, 5].max())
        # the next call's first CTA past its PDL wait, after this call's last CTA ends (the
        # last call's next is in the next replay: not measured)
        nxt_us, _, _, nxt_t00 = nxt
        gap = ((nxt_t00 + float(nxt_us[:, 1].min()) * 1000.0 - t00) / 1000.0 - span
               if i < 3 else float("nan"))
        per_sm = {}
        for s in sm.tolist():
            per_sm[s] = per_sm.get(s, 0) + 1
        end = us[:, 5].tolist()
        row = dict(
            variant=name, cfg=str(cfg), M=M, N=N, K=K, dtype=str(dt), call=i, graph_us=med,
            ctas=len(end), sms=len(per_sm), ctas_per_sm=sorted(set(per_sm.values())),
            start_max=float(us[:, 0].max()),
            pdl_wait_med=st.median((us[:, 1] - us[:, 0]).tolist()),
            first_chunk_med=st.median((us[:, 2] - us[:, 1]).tolist()),
            first_chunk_max=float((us[:, 2] - us[:, 1]).max()),
            later_waits_med=st.median(us[:, 3].tolist()),
            loop_med=st.median((us[:, 4] - us[:, 2]).tolist()),
            epi_med=st.median((us[:, 5] - us[:, 4]).tolist()),
            run_med=st.median((us[:, 5] - us[:, 1]).tolist()),
            end_p10=pct(end, 0.1), end_p50=pct(end, 0.5), end_p90=pct(end, 0.9), span=span,
            gap_to_next=gap)
        # by how many CTAs share the SM: median end
        for k in sorted(set(per_sm.values())):
            e = [end[j] for j in range(len(end)) if per_sm[int(sm[j])] == k]
            row[f"end_med_sm{k}"] = st.median(e)
        rows.append(row)
    return rows


def main():
    full, stream = modules()
    C = full.GemvTMAConfig
    M, N, K = 16, 18432, 3072
    cfgs = [full.choose_config(M, N, K), C(2, 3, 1, 4), C(2, 3, 2, 1), C(2, 2, 2, 2)]
    rows = []
    for dt in (torch.bfloat16,):
        for cfg in cfgs:
            for name, mod in (("full", full), ("stream", stream)):
                cfg_m = mod.GemvTMAConfig(cfg.row_tiles, cfg.stages, cfg.split_k, cfg.warps)
                got = describe(name, mod, cfg_m, M, N, K, dt)
                rows += got
                r = got[-1]
                print(f"{name:6s} {cfg}  graph {r['graph_us']:.2f} us  ctas {r['ctas']} "
                      f"(per SM {r['ctas_per_sm']})", flush=True)
                for r in got:
                    print("   call {call}: start<= {start_max:.2f} pdl {pdl_wait_med:.2f} "
                          "first {first_chunk_med:.2f} (max {first_chunk_max:.2f}) later waits "
                          "{later_waits_med:.2f} loop {loop_med:.2f} epi {epi_med:.2f} run "
                          "{run_med:.2f} | end p10/50/90 {end_p10:.2f}/{end_p50:.2f}/"
                          "{end_p90:.2f} span {span:.2f} gap {gap_to_next:.2f}".format(**r)
                          + "".join(f" sm{k}:{v:.2f}" for k, v in r.items()
                                    if k.startswith("end_med_sm")), flush=True)
    path = os.path.join(os.environ.get("OUT", "."), "gemv-tma-timeline.json")
    with open(path, "w") as f:
        json.dump(dict(device=torch.cuda.get_device_name(), torch=torch.__version__, rows=rows),
                  f, indent=1)
    print("wrote", path)


if __name__ == "__main__":
    main()
