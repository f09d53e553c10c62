"""Commands over stored records: tables (one or all), case analyses and code statistics."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import click

from ecbench.bench.cli.options import (curated_results_option, data_root_option, results_option,
                                       workdir_option)


@click.command("table")
@click.argument("which", type=click.Choice(["runs", "summary", "cases", "3", "4", "ablation",
                                                  "protocol", "sensitivity", "repeat", "5"]))
@curated_results_option
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="also write the table (markdown) to this file")
@click.option("--runtime", default="eager", show_default=True,
              help="table 5: eager, onnx, executorch or torchscript")
@click.option("--batch", type=int, default=100, show_default=True,
              help="table 5: the batch size timed (scaled to ms per 100 sessions)")
@click.option("--cache", type=click.Choice(["warm", "cold"]), default="warm", show_default=True,
              help="table 5: from the latency records timed with warm or cold caches")
def table_command(which: str, results_dir: Path, out: Path | None, runtime: str,
                  batch: int, cache: str) -> None:
    """Render a table from the records under RESULTS: `runs` (test metrics in percent, a row
    per run), `summary` (runs that differ only in their seed as mean ± std), `cases` (test
    metrics by kind of case, from the records and RESULTS/analysis), the paper's `3` (every
    method), `4` (ccode by M and K) and `ablation` (Fig. 3), ours beside the paper's,
    `protocol` (the teacher, Stu-base and student under the paper's protocol and ours),
    `sensitivity` (the distilled student by each distillation weight: Fig. 5 and Section 6.6),
    `repeat` (models with and without the repeat bonus, beside the session recency ranking)
    or `5` (the paper's Table 5 from the latency records under RESULTS/bench)."""
    from ecbench.bench.report.all_tables import case_analyses, latency_records, table3_with_costs
    from ecbench.bench.report.paper_tables import ablation_table, table4
    from ecbench.bench.report.protocol_table import protocol_table
    from ecbench.bench.records import atomic_write_bytes, iter_records
    from ecbench.bench.report.repeat_table import repeat_table
    from ecbench.bench.report.sensitivity import sensitivity_table
    from ecbench.bench.report.tables import cases_table, runs_table, summary_table, table5

    paper_tables = {"3": lambda runs: table3_with_costs(results_dir, runs), "4": table4,
                    "ablation": ablation_table, "protocol": protocol_table,
                    "sensitivity": sensitivity_table, "repeat": repeat_table}

    if which == "cases":
        text = cases_table(case_analyses(results_dir, list(iter_records(results_dir))))
    elif which == "5":
        text = table5(latency_records(results_dir), runtime=runtime, batch=batch, cache=cache)
    elif which in paper_tables:
        text = paper_tables[which](list(iter_records(results_dir)))
    elif which == "summary":
        text = summary_table(iter_records(results_dir))
    else:
        text = runs_table(iter_records(results_dir))
    click.echo(text)
    if out is not None:
        atomic_write_bytes(Path(out), (text + "\n").encode())


@click.command("tables")
@curated_results_option
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="where the tables go [RESULTS/tables]")
@click.option("--figures", type=click.Path(path_type=Path), default=None,
              help="where the figures go [RESULTS/figures]")
def tables_command(results_dir: Path, out: Path | None, figures: Path | None) -> None:
    """Regenerate every table and figure from the records under RESULTS: runs, seed summary,
    the paper's Tables 3, 4 and 5 (each runtime, batch and cache recorded), Fig. 3 and Fig. 6,
    analyses, the hyperparameter curves; and Fig. 3, 4, 5 and 6, each as SVG and PDF."""
    from ecbench.bench.records import CURATED_RESULTS
    from ecbench.bench.report.all_tables import fill_readme_block, write_all

    # generated blocks of the READMEs: the headline table, the findings report's record index
    blocks = {"headline.md": (CURATED_RESULTS.parent / "README.md", "headline"),
              "index.md": (CURATED_RESULTS / "README.md", "record-index")}
    for path in write_all(results_dir, out, figures):
        click.echo(f"written: {path}")
        readme, block = blocks.get(path.name, (None, None))
        if (readme is not None and Path(results_dir).resolve() == CURATED_RESULTS
                and readme.is_file() and fill_readme_block(readme, block, path.read_text())):
            click.echo(f"written: {readme} (its {block} block)")


_ANALYSIS_OPTIONS = [
    click.argument("records", nargs=-1, required=True,
                   type=click.Path(path_type=Path, exists=True, dir_okay=False)),
    data_root_option,
    workdir_option("where the runs left their models"),
    results_option,
    click.option("--threads", type=int, default=1, show_default=True),
]


def analysis_command(name: str, analyse: Callable[..., tuple[dict[str, Any], Path]],
                     render: Callable[[list[dict[str, Any]]], str]) -> Callable:
    """A command that runs `analyse` on each recorded run (its model re-loaded from WORKDIR),
    writes each result under RESULTS/analysis and prints `render` of them all."""
    def decorate(describe: Callable) -> click.Command:
        def command(records: tuple[Path, ...], data_root: str | None, workdir: Path,
                    results_dir: Path, threads: int) -> None:
            analyses = []
            for record in records:
                result, path = analyse(record, data_root=data_root, workdir=workdir,
                                       results_dir=results_dir, threads=threads)
                click.echo(f"written: {path}", err=True)
                analyses.append(result)
            click.echo(render(analyses))

        command.__doc__ = describe.__doc__
        for option in reversed(_ANALYSIS_OPTIONS):
            command = option(command)
        return click.command(name)(command)
    return decorate


def _lazy(module: str, name: str) -> Callable:
    """`module.name`, imported when first called (keeps `ecbench --help` fast)."""
    def call(*args: Any, **kwargs: Any) -> Any:
        import importlib
        return getattr(importlib.import_module(module), name)(*args, **kwargs)
    return call


@analysis_command("analyse", _lazy("ecbench.bench.report.analysis", "analyse_cases"),
                  _lazy("ecbench.bench.report.tables", "cases_table"))
def analyse_command() -> None:
    """Test metrics of recorded runs by kind of case: the label already in the session (a
    repeat click) or new, a hot or a cold item. Re-ranks the test set with each run's deployed
    model, checks it reproduces the record's test metrics, and writes
    RESULTS/analysis/cases-<record>.json."""


@analysis_command("codes", _lazy("ecbench.bench.report.code_analysis", "analyse_codes"),
                  _lazy("ecbench.bench.report.tables", "codes_table"))
def codes_command() -> None:
    """How recorded ccode runs use their codes: codeword usage (the paper's Fig. 6), items one
    codeword apart, and the share of such neighbours among the items ranked above a missed
    label. Writes RESULTS/analysis/codes-<record>.json."""


@click.command("curate")
@click.argument("files", nargs=-1, required=True,
                type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("--replace", is_flag=True,
              help="replace a curated record of the same name that holds other numbers")
@curated_results_option
def curate_command(files: tuple[Path, ...], replace: bool, results_dir: Path) -> None:
    """Add record files (RESULTS/runs/*.json, bench/*.json, analysis/*.json of any results
    folder) to the curated results that the project's tables and figures are built from:
    each is copied in beside its kind and listed in RESULTS/manifest.json. A curated record
    is never overwritten with other content unless --replace is given."""
    from ecbench.bench.errors import ConfigError
    from ecbench.bench.records import curate

    try:
        for path in curate(results_dir, list(files), replace=replace):
            click.echo(f"curated: {path}")
    except (ValueError, OSError) as exc:
        raise ConfigError(str(exc)) from None
