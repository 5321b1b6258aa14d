"""The README section generator on small fixture results."""

import json
import shutil
from pathlib import Path

from fp4mm.bench import report

FIXTURES = Path(__file__).parent / "fixtures"
README = ("# fp4mm\n\nintro\n\n## Performance\n<!-- bench:begin -->\nold text\n"
          "<!-- bench:end -->\n\nrest\n")


def _results(tmp_path, *names):
    d = tmp_path / "results"
    d.mkdir()
    for n in names:
        shutil.copy(FIXTURES / n, d / n)
    (d / "notes.json").write_text("[1, 2]")  # not a result: skipped
    return d


def test_latest_full_run_per_suite_quick_only_where_nothing_else(tmp_path):
    runs = report.load_runs(_results(tmp_path, "h100_full.json", "h100_quick.json"))
    assert len(runs) == 2
    chosen = report.latest_per_suite(runs)
    assert chosen["challenge"][0].name == "h100_full.json"  # the newer quick run loses
    assert chosen["decode"][0].name == "h100_full.json"
    assert chosen["sweep"][0].name == "h100_quick.json"  # only a quick run has it
    assert "quant" not in chosen


def test_cpu_runs_are_never_reported(tmp_path):
    d = _results(tmp_path, "h100_full.json")
    cpu = json.loads((d / "h100_full.json").read_text())
    cpu.update(device="cpu (x86_64)", date="2027-01-01T00:00:00+00:00")
    (d / "cpu.json").write_text(json.dumps(cpu))
    chosen = report.latest_per_suite(report.load_runs(d))
    assert chosen["challenge"][0].name == "h100_full.json"


def test_section_names_the_card_and_shows_same_run_ratios(tmp_path):
    by_card = report.latest_per_card(report.load_runs(_results(tmp_path, "h100_full.json")))
    text = report.render_section(
        by_card, {"NVIDIA H100 80GB HBM3": "bench/plots/performance-nvidia-h100-80gb-hbm3.png"})
    assert "### NVIDIA H100 80GB HBM3" in text
    assert "NVIDIA H100 80GB HBM3" in text and "commit `0123456789`" in text
    line = next(ln for ln in text.splitlines() if ln.startswith("| nvfp4_mm | 2048x18432x3072"))
    assert "**0.98x**" in line and "**1.05x**" in line and "**wrong**" in line
    assert "**1.00x**" not in line  # the baseline gets no ratio of its own
    assert "18432x3072: 41 us" in text  # the pre-packing cost is stated
    decode = next(ln for ln in text.splitlines() if ln.startswith("| nvfp4_mm | 16x18432x3072"))
    assert "GB/s" in decode and "**3.44x**" in decode
    assert ("![fp4mm benchmark on NVIDIA H100 80GB HBM3]"
            "(bench/plots/performance-nvidia-h100-80gb-hbm3.png)") in text


def test_main_rewrites_only_between_the_markers_and_draws_the_plot(tmp_path):
    results = _results(tmp_path, "h100_full.json", "h100_quick.json")
    readme = tmp_path / "README.md"
    readme.write_text(README)
    plot = tmp_path / "plots" / "performance.png"
    args = ["--results", str(results), "--readme", str(readme), "--plot", str(plot)]
    assert report.main(args) == 0
    text = readme.read_text()
    assert text.startswith("# fp4mm\n\nintro\n\n## Performance\n<!-- bench:begin -->\n")
    assert text.endswith("<!-- bench:end -->\n\nrest\n")
    assert "old text" not in text and "quick run" in text  # the sweep came from a quick run
    drawn = tmp_path / "plots" / "performance-nvidia-h100-80gb-hbm3.png"
    assert drawn.read_bytes()[:4] == b"\x89PNG" and not plot.exists()
    assert report.main(args + ["--check"]) == 0  # up to date now
    readme.write_text(README)
    assert report.main(args + ["--check"]) == 1


def test_missing_markers_print_the_section(tmp_path, capsys):
    results = _results(tmp_path, "h100_full.json")
    readme = tmp_path / "README.md"
    readme.write_text("# fp4mm\n")
    assert report.main(["--results", str(results), "--readme", str(readme), "--no-plot"]) == 0
    out = capsys.readouterr()
    assert "no <!-- bench:begin -->" in out.err and "| nvfp4_mm |" in out.out
    assert readme.read_text() == "# fp4mm\n"


def test_each_card_gets_its_own_block_newest_first(tmp_path):
    d = _results(tmp_path, "h100_full.json", "h100_quick.json")
    h200 = json.loads((d / "h100_full.json").read_text())
    h200.update(device="NVIDIA H200", date="2027-01-01T00:00:00+00:00", suites=["decode"])
    h200["rows"] = [dict(r, median_us=r["median_us"] and r["median_us"] / 2) for r in h200["rows"]
                    if "decode" in r.get("suites", [r.get("suite")])]
    assert h200["rows"]
    (d / "h200.json").write_text(json.dumps(h200))
    by_card = report.latest_per_card(report.load_runs(d))
    assert list(by_card) == ["NVIDIA H200", "NVIDIA H100 80GB HBM3"]
    assert set(by_card["NVIDIA H200"]) == {"decode"}
    # The H100 keeps its own decode table: a newer run on another card does not replace it.
    assert by_card["NVIDIA H100 80GB HBM3"]["decode"][0].name == "h100_full.json"
    text = report.render_section(by_card)
    h200_at, h100_at = text.index("### NVIDIA H200"), text.index("### NVIDIA H100 80GB HBM3")
    assert h200_at < h100_at
    assert text[h200_at:h100_at].count("h200.json`") == 1
    assert "h100_full.json" not in text[h200_at:h100_at]
    assert report.card_plot_path("bench/plots/performance.png", "NVIDIA H200") == \
        Path("bench/plots/performance-nvidia-h200.png")


def test_no_results_yet(tmp_path):
    text = report.render_section({}, None)
    assert "No GPU benchmark results yet" in text


def test_the_plot_takes_each_panel_from_its_own_run(tmp_path, monkeypatch):
    chosen = report.latest_per_suite(
        report.load_runs(_results(tmp_path, "h100_full.json", "h100_quick.json")))
    drawn = {}

    def fake_plot_rows(rows, path, title):
        drawn["rows"] = rows
        return path

    monkeypatch.setattr("fp4mm.bench.plot.plot_rows", fake_plot_rows)
    report.plot_chosen(chosen, tmp_path / "p.png")
    sweep = [r for r in drawn["rows"] if r["suites"] == ["sweep"]]
    assert {r["M"] for r in sweep} == {8}  # only the sweep run's own points
    assert all(r["median_us"] != 999.0 for r in drawn["rows"])  # the quick run's table5 row


def test_the_committed_readme_matches_the_committed_results(monkeypatch):
    """The README's performance section is what the report makes of bench/results, and every
    figure it shows is committed."""
    root = Path(__file__).resolve().parents[2]
    monkeypatch.chdir(root)
    assert report.main(["--check"]) == 0
    section = (root / "README.md").read_text().split(report.BEGIN)[1].split(report.END)[0]
    figures = [ln.split("](")[1].rstrip(")") for ln in section.splitlines()
               if ln.startswith("![")]
    assert figures and all((root / f).is_file() for f in figures)
