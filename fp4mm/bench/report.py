"""Regenerate the README's performance section from committed benchmark results.

    python -m fp4mm.bench.report [--results bench/results] [--readme README.md]
                                 [--plot bench/plots/performance.png] [--check]

For each card and suite, the latest full (not ``--quick``) GPU run on that card under
``--results`` that contains the suite supplies its table (quick runs only when no full run exists;
the text then says so). Each card gets its own block, the card with the newest run first: ratios
are only ever measured within one run, and a result on one card says nothing about another. Each
table names its card, versions, date, commit and source file. The text replaces what lies between
``<!-- bench:begin -->`` and ``<!-- bench:end -->`` in the README (nothing else is touched);
without the markers it is printed instead. One figure per card is redrawn from the same rows,
named after ``--plot`` with the card's name added (``performance-nvidia-h200.png``).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from fp4mm.bench.cases import SUITES, SWEEP_IMPLS, ordered_labels
from fp4mm.bench.cases import impl_label as label

BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
TITLES = {
    "challenge": "Challenge performance cases (W4A4 rev. 2: 2048x18432x3072, alpha 1/64, fp16 "
                 "out; W4A16 rev. 1: 2048x8192x3072, group 32)",
    "table5": "AutoKernel Table 5 shapes, `nvfp4_mm` (W4A4)",
    "decode": "Decode shapes (effective GB/s = bytes that must be read and written / time)",
    "sweep": "M sweep, `nvfp4_mm`",
    "quant": "NVFP4 activation quantiser (bf16 in, packed out; `fp4mm`: global scale given, "
             "`fp4mm_dynamic`: amax pass first)",
}


def load_runs(results_dir) -> list[tuple[Path, dict]]:
    """Every ``fp4mm bench`` result under ``results_dir`` (other JSON files, such as kernel
    scripts' own logs, are skipped)."""
    runs = []
    for path in sorted(Path(results_dir).glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if (isinstance(data, dict) and isinstance(data.get("rows"), list) and "date" in data
                and isinstance(data.get("suites"), list)):  # written by `fp4mm bench`
            runs.append((path, data))
    return runs


def _on_gpu(run: dict) -> bool:
    return not str(run.get("device", "cpu")).startswith("cpu")


def latest_per_suite(runs: list[tuple[Path, dict]],
                     device: str | None = None) -> dict[str, tuple[Path, dict]]:
    """``{suite: (path, run)}``: the newest full GPU run holding the suite (newest quick run if
    there is no full one), on ``device`` only when it is given."""
    chosen = {}
    for suite in SUITES:
        holding = [(p, r) for p, r in runs if suite in r.get("suites", []) and _on_gpu(r)
                   and device in (None, r["device"])]
        full = [(p, r) for p, r in holding if not r.get("quick")]
        pool = full or holding
        if pool:
            chosen[suite] = max(pool, key=lambda pr: (pr[1]["date"], pr[0].name))
    return chosen


def latest_per_card(runs: list[tuple[Path, dict]]) -> dict[str, dict[str, tuple[Path, dict]]]:
    """``{card: {suite: (path, run)}}`` (:func:`latest_per_suite` on each card), the card whose
    chosen runs include the newest first."""
    cards = {d: latest_per_suite(runs, d) for d in dict.fromkeys(r["device"] for _, r in runs
                                                                 if _on_gpu(r))}
    newest = {d: max(r["date"] for _, r in chosen.values()) for d, chosen in cards.items()}
    return {d: cards[d] for d in sorted(cards, key=newest.get, reverse=True)}


def card_plot_path(plot: str | Path, card: str) -> Path:
    """``plot`` with the card's name added before the suffix: performance-nvidia-h200.png."""
    plot = Path(plot)
    slug = re.sub(r"[^a-z0-9]+", "-", card.lower()).strip("-")
    return plot.with_name(f"{plot.stem}-{slug}{plot.suffix}")


def _suite_rows(run: dict, suite: str) -> list[dict]:
    """The rows of ``suite`` in ``run``; for the M sweep only its own implementations, by M."""
    rows = [r for r in run["rows"] if suite in r.get("suites", [r.get("suite")])]
    if suite == "sweep":
        rows = sorted((r for r in rows if r["impl"] in SWEEP_IMPLS), key=lambda r: r["M"])
    return rows


def _shape(row: dict) -> str:
    if row["op"] == "quantize_nvfp4":
        return f"{row['M']}x{row['K']}"
    g = f", g{row['group_size']}" if row.get("group_size") else ""
    return f"{row['M']}x{row['N']}x{row['K']}{g}"


def cell(row: dict | None) -> str:
    """``**1.03x**<br>290.1 us, 812 TF/s`` (GB/s for memory-bound rows; no ratio for the
    baseline itself); ``**wrong**`` / ``**error**`` with no time."""
    if row is None:
        return ""
    if not row.get("correct"):
        return "**error**" if row.get("error") else "**wrong**"
    if row.get("memory_bound") or not row.get("flops"):
        metric = f"{row['gbps']:.0f} GB/s"
        if row.get("pct_copy_roofline"):
            metric += f" ({row['pct_copy_roofline']:.0f}% of copy)"
    else:
        metric = f"{row['tflops']:.0f} TF/s"
    text = f"{row['median_us']:.1f} us, {metric}"
    if row.get("ratio") is not None and row["impl"] != row.get("ratio_baseline"):
        text = f"**{row['ratio']:.2f}x**<br>{text}"
    return text


def render_table(rows: list[dict]) -> str:
    """One line per case (op, shape), one column per implementation that has a row."""
    cases = list(dict.fromkeys((r["op"], _shape(r)) for r in rows))
    cols = ordered_labels(rows)
    lines = ["| op | M x N x K | " + " | ".join(f"`{c}`" for c in cols) + " |",
             "|---|---|" + "---|" * len(cols)]
    for op, shape in cases:
        by_impl = {label(r): r for r in rows if (r["op"], _shape(r)) == (op, shape)}
        lines.append(f"| {op} | {shape} | " + " | ".join(cell(by_impl.get(c)) for c in cols)
                     + " |")
    return "\n".join(lines)


def provenance(path: Path, run: dict) -> str:
    commit = (run.get("git_commit") or "unknown")[:10]
    dirty = " (uncommitted changes)" if run.get("git_dirty") else ""
    quick = " **quick run (short timing)**;" if run.get("quick") else ""
    if run.get("complete") is False:
        quick += " **incomplete run (cut short)**;"
    copy = (run.get("roofline") or {}).get("copy_gbps")
    copy = f" device copy {copy:.0f} GB/s;" if copy else ""
    timer = (run.get("timing") or {}).get("timer", "do_bench")
    rounds = (run.get("timing") or {}).get("rounds")
    rounds = f", {rounds} rounds" if rounds else ""
    return (f"{run['device']}; torch {run.get('torch')}, triton {run.get('triton')}; "
            f"{run['date']}; commit `{commit}`{dirty};{copy} timer `{timer}`{rounds};{quick} "
            f"`{path.as_posix()}`")


def _prepack_note(rows: list[dict]) -> str:
    """The weight pre-packing cost (it depends on the weight's format and N x K only), as a
    range: NVFP4 weights (``prepack_nvfp4_weight``) or 16-bit group scales
    (``prepack_w4a16_weight``, ``w4a16_mm`` rows)."""
    costs: dict[tuple[str, int, int], list[float]] = {}
    for r in rows:
        if r.get("prepack_us") is not None and r.get("kind") == "ours":
            fmt = "group-scale" if r.get("op") == "w4a16_mm" else "NVFP4"
            costs.setdefault((fmt, r["N"], r["K"]), []).append(r["prepack_us"])
    if not costs:
        return ""
    parts = []
    for (fmt, n, k), us in costs.items():
        lo, hi = min(us), max(us)
        span = f"{lo:.0f} us" if round(lo) == round(hi) else f"{lo:.0f}-{hi:.0f} us"
        parts.append(f"{fmt} {n}x{k}: {span}")
    return ("\nPre-packing a weight (once per weight; not inside the `(prepacked)` times) "
            "costs, by format and weight N x K: " + "; ".join(parts) + ".\n")


def render_section(by_card: dict[str, dict[str, tuple[Path, dict]]],
                   plot_paths: dict[str, str] | None = None) -> str:
    """The markdown between the markers (without them): one block per card of
    :func:`latest_per_card`, each with its figure where ``plot_paths`` names one."""
    out = ["", "_Generated by `python -m fp4mm.bench.report` from `bench/results/*.json`; do not "
           "edit by hand. Each cell: median time, TF/s (GB/s for memory-bound rows), and in bold "
           "the speed ratio to cuBLAS bf16 on pre-dequantised operands (cuBLAS fp16 for "
           "`w4a16_mm`) of the same shape, measured in the same run on the same card. A wrong "
           "result is never timed. Timer `do_bench`: `triton.testing.do_bench` (it flushes the "
           "L2 by writing 256 MB, whose dirty lines slow the next memory-bound kernel); "
           "`read_flush`: the same procedure with the L2 flushed by a read; `graph`: CUDA-graph "
           "replay, the GPU time without Python's launch cost (the rotating weight copies keep "
           "the L2 cold). Each table names its timer; where it also names rounds, every "
           "implementation of a shape was timed that many times, each round starting at the "
           "next implementation, and the cell gives the median of the rounds' medians._", ""]
    if not by_card:
        out += ["No GPU benchmark results yet: run `fp4mm bench` on a Hopper GPU, commit the JSON, "
                "then `python -m fp4mm.bench.report`.", ""]
        return "\n".join(out)
    for card, chosen in by_card.items():
        out += [f"### {card}", ""]
        for suite in SUITES:
            if suite not in chosen:
                continue
            path, run = chosen[suite]
            rows = _suite_rows(run, suite)
            out += [f"#### {TITLES[suite]}", "", f"Card: {provenance(path, run)}", "",
                    render_table(rows), _prepack_note(rows)]
        if plot_paths and plot_paths.get(card):
            out += [f"![fp4mm benchmark on {card}]({plot_paths[card]})", ""]
    return "\n".join(out)


def replace_between_markers(text: str, section: str) -> str | None:
    """``text`` with the part between the markers replaced; None if the markers are missing."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        return None
    return text[:start + len(BEGIN)] + "\n" + section.strip("\n") + "\n" + text[end:]


def plot_chosen(chosen: dict[str, tuple[Path, dict]], path) -> Path | None:
    from fp4mm.bench.plot import plot_rows

    # Each panel draws only rows of the run chosen for its suite (the sweep curve must not mix
    # in Table 5 points timed in another run), so a row keeps only the suite it was chosen for.
    rows, seen = [], set()
    for suite, (_, run) in chosen.items():
        for r in _suite_rows(run, suite):
            key = (suite == "sweep", r["op"], r["M"], r["N"], r["K"], r.get("group_size"),
                   label(r))
            if key not in seen:
                seen.add(key)
                rows.append({**r, "suite": suite, "suites": [suite]})
    devices = ", ".join(dict.fromkeys(run["device"] for _, run in chosen.values()))
    return plot_rows(rows, path, f"fp4mm bench on {devices} (ratios within each run)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fp4mm.bench.report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", default="bench/results")
    parser.add_argument("--readme", default="README.md")
    parser.add_argument("--plot", default="bench/plots/performance.png",
                        help="base name of the figures, one per card with the card added "
                             "(performance-nvidia-h200.png), referenced from the README")
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument("--check", action="store_true",
                        help="change nothing; exit 1 if the README section is out of date")
    args = parser.parse_args(argv)
    by_card = latest_per_card(load_runs(args.results))
    plot_refs = {}
    for card, chosen in ({} if args.no_plot else by_card).items():
        path = card_plot_path(args.plot, card)
        if args.check or plot_chosen(chosen, path) is not None:
            plot_refs[card] = path.as_posix()
    section = render_section(by_card, plot_refs)
    readme = Path(args.readme)
    text = readme.read_text() if readme.exists() else ""
    new = replace_between_markers(text, section)
    if new is None:
        print(f"{readme}: no {BEGIN} ... {END} markers; the section is printed below instead.",
              file=sys.stderr)
        print(section)
        return 0 if not args.check else 1
    if args.check:
        if new != text:
            print(f"{readme}: the performance section is out of date; run "
                  "`python -m fp4mm.bench.report`", file=sys.stderr)
            return 1
        return 0
    if new != text:
        readme.write_text(new)
    print(f"updated {readme} from {sum(map(len, by_card.values()))} suite(s) on "
          f"{len(by_card)} card(s)" + (f" and drew {', '.join(plot_refs.values())}"
                                       if plot_refs else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
