"""Every table and figure the suite renders, regenerated from the stored records by one call.

What `ecbench tables` writes under RESULTS/tables: the run table and its seed summary, the
paper's Tables 3, 4 and 5 (each runtime, batch size and cache state recorded), Fig. 3 and the
hyperparameter analysis of Section 6.6 (as tables), the protocol gap between the paper's
figures and ours, the repeat bonus beside the session recency ranking (beyond the paper), the
case analyses and the code statistics with Fig. 6 per analysed ccode run, the
accuracy-bytes-latency frontier of each dataset (`ecbench.bench.report.frontier`); and under
RESULTS/figures the paper's Fig. 3, 4, 5 and 6 and the frontiers, each as SVG and PDF
(`ecbench.bench.report.figures`, drawn with matplotlib by `ecbench.bench.report.plots`). All of
them are pure functions of the records under RESULTS, so they can be rebuilt at any time.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, Callable

from ecbench.bench.report.frontier import frontier_figure, frontier_table, frontier_views
from ecbench.bench.report.paper_tables import ablation_table, headline_table, table3, table4
from ecbench.bench.report.protocol_table import protocol_table
from ecbench.bench.report.repeat_table import repeat_table
from ecbench.bench.records import atomic_write_bytes, iter_records, load_record, record_files
from ecbench.bench.report.sensitivity import sensitivity_table
from ecbench.bench.report.tables import (cases_table, codes_table, fig6_table, record_index,
                                         runs_table, summary_table, table5,
                                         times_paper_models)


def _records_in(results_dir: Path, folder: str, kind: str) -> list[dict[str, Any]]:
    return [load_record(p) for p in record_files(results_dir, folder, f"{kind}-*.json")]


def analyses(results_dir: Path, kind: str, runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The analysis records of `kind` (cases, codes) under RESULTS/analysis that describe the
    training each of the run records `runs` now holds (see `describes`)."""
    records = {r["key"]: r for r in runs}
    return [a for a in _records_in(results_dir, "analysis", kind)
            if a["key"] not in records or describes(a, records[a["key"]])]


def describes(analysis: dict[str, Any], record: dict[str, Any]) -> bool:
    """Whether `analysis` analysed the training `record` holds. Records are keyed by config,
    so a rerun of the same settings replaces the record, and an analysis of the earlier
    training no longer describes it. An analysis names the training it analysed (its end
    and test metrics); an older one that does not is checked by the test metrics it
    reproduced, if any, and by having been made after the training ended."""
    analysed = analysis.get("analysed")
    if analysed is not None:
        return (analysed["finished"] == record.get("finished")
                and _same_metrics(analysed["test"], record["test"]))
    if "test" in analysis and not _same_metrics(analysis["test"], record["test"]):
        return False
    if "finished" not in record or "date" not in analysis:
        return True
    return datetime.fromisoformat(analysis["date"]) >= datetime.fromisoformat(record["finished"])


def case_analyses(results_dir: Path, runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every run's metrics by case: from its case analysis where that analysed this very
    training, else from the record itself."""
    by_key = {r["key"]: {**r, "dataset": r["dataset"]["name"]} for r in runs
              if r.get("test_by_case")}
    by_key.update({a["key"]: a for a in analyses(results_dir, "cases", runs)})
    return list(by_key.values())


def _same_metrics(a: dict[str, float], b: dict[str, float], tolerance: float = 1e-6) -> bool:
    return a.keys() == b.keys() and all(abs(a[m] - b[m]) <= tolerance for m in a)


def bench_records(results_dir: Path, kind: str) -> list[dict[str, Any]]:
    """The benchmark records of `kind` (latency, train, score) under RESULTS/bench."""
    return _records_in(results_dir, "bench", kind)


def knn_records(results_dir: Path) -> list[dict[str, Any]]:
    """The session-kNN reference records (`ecbench knn`) under RESULTS/baselines."""
    return [load_record(p) for p in record_files(results_dir, "baselines")]


def latency_records(results_dir: Path) -> list[dict[str, Any]]:
    """The latency records, each with the name of its file (`file`), which tables cite."""
    return [{**load_record(p), "file": p.name}
            for p in record_files(results_dir, "bench", "latency-*.json")]


def table3_with_costs(results_dir: Path, runs: list[dict[str, Any]]) -> str:
    """Table 3 from the run records, its training costs from RESULTS/bench's train records."""
    return table3(runs, train_benchmarks=bench_records(results_dir, "train"))


def latency_variants(records: list[dict[str, Any]]) -> list[tuple[str, int, str]]:
    """(runtime, batch, cache) of every timing Table 5's latency records hold."""
    found = set()
    for record in filter(times_paper_models, records):
        cache = record["protocol"].get("cache", "warm")
        for model in record["models"]:
            for runtime, timing in model["runtimes"].items():
                for batch in timing.get("batches", {}):
                    found.add((runtime, int(batch), cache))
    return sorted(found)


def render_all(results_dir: Path, runs: list[dict[str, Any]] | None = None,
               codes: list[dict[str, Any]] | None = None) -> dict[str, str]:
    """File name -> table text, for every table the records support (`runs`: the run
    records, `codes`: their code analyses, if already read)."""
    runs = list(iter_records(results_dir)) if runs is None else runs
    tables: dict[str, Callable[[], str]] = {
        "runs.md": lambda: runs_table(runs), "summary.md": lambda: summary_table(runs),
        "index.md": lambda: record_index(runs),
        "table3.md": lambda: table3_with_costs(results_dir, runs),
        "table4.md": lambda: table4(runs), "headline.md": lambda: headline_table(runs),
        "ablation.md": lambda: ablation_table(runs), "protocol.md": lambda: protocol_table(runs),
        "sensitivity.md": lambda: sensitivity_table(runs),
        "repeat.md": lambda: repeat_table(runs)}
    tables["cases.md"] = lambda: cases_table(case_analyses(results_dir, runs))
    codes = analyses(results_dir, "codes", runs) if codes is None else codes
    if codes:
        tables["codes.md"] = lambda: "\n\n".join([codes_table(codes)]
                                                 + [fig6_table(a) for a in codes])
    latency = latency_records(results_dir)
    knn = knn_records(results_dir)
    for data, epochs in frontier_views(runs, knn):
        tables[f"frontier-{data}.md"] = (
            lambda d=data, e=epochs: frontier_table(runs, knn, latency, d, e))
    for runtime, batch, cache in latency_variants(latency):
        tables[f"table5-{runtime}-b{batch}-{cache}.md"] = (
            lambda r=runtime, b=batch, c=cache: table5(latency, runtime=r, batch=b, cache=c))
    return {name: render() for name, render in tables.items()}


def render_all_figures(results_dir: Path, runs: list[dict[str, Any]] | None = None,
                       codes: list[dict[str, Any]] | None = None) -> dict[str, bytes]:
    """File name -> bytes (STEM.svg and STEM.pdf), for every figure the records support
    (`runs`, `codes` as in `render_all`)."""
    from ecbench.bench.report.figures import render_figures
    from ecbench.bench.report.plots import figure_files

    runs = list(iter_records(results_dir)) if runs is None else runs
    codes = analyses(results_dir, "codes", runs) if codes is None else codes
    files = {name: data for stem, figure in render_figures(runs, codes).items()
             for name, data in figure_files(stem, figure).items()}
    knn = knn_records(results_dir)
    for data, epochs in frontier_views(runs, knn):
        files.update(frontier_figure(runs, knn, data, epochs))
    return files


def write_all(results_dir: Path, out_dir: Path | None = None,
              figures_dir: Path | None = None) -> list[Path]:
    """Render every table (markdown) under `out_dir` (RESULTS/tables) and every figure (SVG and
    PDF) under `figures_dir` (RESULTS/figures)."""
    from ecbench.bench.report.plots import FORMATS

    own_folders = out_dir is None and figures_dir is None
    out_dir = Path(out_dir or Path(results_dir) / "tables")
    figures_dir = Path(figures_dir or Path(results_dir) / "figures")
    runs, written = list(iter_records(results_dir)), []
    codes = analyses(results_dir, "codes", runs)
    for name, text in render_all(results_dir, runs, codes).items():
        written.append(out_dir / name)
        atomic_write_bytes(written[-1], (text + "\n").encode())
    for name, data in render_all_figures(results_dir, runs, codes).items():
        written.append(figures_dir / name)
        atomic_write_bytes(written[-1], data)
    if own_folders:  # RESULTS/tables and RESULTS/figures hold only what the records render
        figure_files = [p for fmt in FORMATS for p in figures_dir.glob(f"*.{fmt}")]
        for stale in [*out_dir.glob("*.md"), *figure_files]:
            if stale not in written:
                stale.unlink()
    return written


def readme_block(readme_text: str, name: str) -> tuple[int, int] | None:
    """Where the generated block `name` sits in a README (between `<!-- name:start -->` and
    `<!-- name:end -->`): the start and end offsets of its content, or None."""
    start, end = f"<!-- {name}:start -->\n", f"<!-- {name}:end -->"
    i = readme_text.find(start)
    j = readme_text.find(end, i + len(start)) if i >= 0 else -1
    return (i + len(start), j) if i >= 0 and j >= 0 else None


def fill_readme_block(readme: Path, name: str, text: str) -> bool:
    """Write `text` into the README's block `name`, so the README cannot drift from the
    records; False if the README has no such block."""
    content = Path(readme).read_text()
    where = readme_block(content, name)
    if where is None:
        return False
    atomic_write_bytes(Path(readme), (content[:where[0]] + text.rstrip("\n") + "\n"
                                      + content[where[1]:]).encode())
    return True
