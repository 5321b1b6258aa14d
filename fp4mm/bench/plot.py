"""The benchmark's figure, drawn from result rows (never from typed numbers).

Panels, each present only when the rows have data for it:
- compute-bound shapes (challenge, Table 5, the W4A16 performance case): bars of the speed ratio
  to cuBLAS (bf16; fp16 for ``w4a16_mm``) of the same shape and run, one bar per implementation;
- decode shapes: the same ratio bars;
- the M sweep (N = 18432, K = 3072 by default): median time against M, log-log, one line per
  implementation (cuBLAS bf16 and quack beside fp4mm).
Wrong or failed rows have no time and draw nothing.
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

from fp4mm.bench.cases import SWEEP_IMPLS, ordered_labels
from fp4mm.bench.cases import impl_label as label

COLORS = {"fp4mm": "#d62728", "fp4mm (prepacked)": "#ff7f0e", "fp4mm_solve": "#8c564b",
          "fp4mm_gemm": "#e377c2", "fp4mm_gemv": "#bcbd22", "fp4mm_gemv_sm90": "#aec7e8",
          "fp4mm_gemv_fp8_sm90": "#c5b0d5",
          "cublas_bf16": "#1f77b4", "cublas_fp16": "#17becf", "torch_dequant_mm": "#7f7f7f",
          "triton_dot_scaled_mxfp4": "#9467bd", "quack_w4a16": "#2ca02c",
          "quack_w4a16_plus_xdequant": "#98df8a"}


def _shape(row: dict) -> str:
    return f"{row['M']}x{row['N']}x{row['K']}"


def _timed(rows):
    return [r for r in rows if r.get("correct") and r.get("median_us")]


def _bar_panel(ax, rows: list[dict], title: str) -> None:
    rows = [r for r in rows if r["impl"] != r.get("ratio_baseline") and r.get("ratio")]
    cases = list(dict.fromkeys((r["op"], _shape(r)) for r in rows))
    impls = ordered_labels(rows)
    width = 0.8 / max(1, len(impls))
    for j, impl in enumerate(impls):
        xs, ys = [], []
        for i, case in enumerate(cases):
            for r in rows:
                if (r["op"], _shape(r)) == case and label(r) == impl:
                    xs.append(i + (j - (len(impls) - 1) / 2) * width)
                    ys.append(r["ratio"])
        ax.bar(xs, ys, width, label=impl, color=COLORS.get(impl))
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(cases)))
    ax.set_xticklabels([f"{op}\n{shape}" for op, shape in cases], fontsize=7, rotation=30,
                       ha="right")
    ax.set_ylabel("speed vs cuBLAS (same run)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.005, 1.0))


def _sweep_panel(ax, rows: list[dict]) -> None:
    nk = rows[0]["N"], rows[0]["K"]
    for impl in ordered_labels(rows):
        pts = sorted((r["M"], r["median_us"]) for r in rows if label(r) == impl)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", markersize=3, label=impl,
                color=COLORS.get(impl))
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("M (tokens)")
    ax.set_ylabel("median time (us)")
    ax.set_title(f"nvfp4_mm M sweep, N = {nk[0]}, K = {nk[1]}", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.005, 1.0))


def panels(rows: list[dict]) -> list[tuple[str, list[dict]]]:
    """``[(title, rows)]`` of the panels that have data."""
    rows = _timed(rows)
    matmul = [r for r in rows if r["op"] != "quantize_nvfp4"]
    other = [r for r in matmul if set(r.get("suites", [r.get("suite")])) - {"sweep"}]
    compute = [r for r in other if not r.get("memory_bound")]
    decode = [r for r in other if r.get("memory_bound")]
    sweep = [r for r in matmul if "sweep" in r.get("suites", [r.get("suite")])
             and r["op"] == "nvfp4_mm" and r["impl"] in SWEEP_IMPLS]
    out = []
    if compute:
        out.append(("Compute-bound shapes: speed vs cuBLAS bf16 (fp16 for w4a16_mm)", compute))
    if decode:
        out.append(("Decode shapes: speed vs cuBLAS bf16 (fp16 for w4a16_mm)", decode))
    if sweep:
        out.append(("sweep", sweep))
    return out


def plot_rows(rows: list[dict], path, title: str) -> Path | None:
    """Draw the panels of ``rows`` into a PNG at ``path``; None if there is nothing to draw."""
    todo = panels(rows)
    if not todo:
        return None
    fig = Figure(figsize=(13, 4.2 * len(todo)), layout="constrained")
    fig.suptitle(title, fontsize=10)
    for ax, (name, part) in zip(fig.subplots(len(todo), 1, squeeze=False)[:, 0], todo):
        if name == "sweep":
            _sweep_panel(ax, part)
        else:
            _bar_panel(ax, part, name)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def plot_result(result: dict, path) -> Path | None:
    """The figure of one run, titled with its card and date."""
    title = f"fp4mm bench: {result['device']}, {result['date'][:10]}"
    return plot_rows(result["rows"], path, title)
