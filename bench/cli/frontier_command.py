"""`ecbench frontier`: every registered compressor trained to each byte budget on one dataset
(what is missing, on the sweep machinery), the trained points timed in one process, then the
accuracy-bytes-latency table and plot."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ecbench.bench.cli.sweep_commands import (Placement, placement_options, recorded_runs,
                                              run_sweep, time_recorded_runs)
from ecbench.bench.errors import ConfigError
from ecbench.bench.report.frontier import REPEAT_BUDGET, TARGETS, budgeted_names
from ecbench.bench.sweep import SweepSpec

if TYPE_CHECKING:
    from ecbench.bench.data.sessions import SessionDataset

DEFAULT_EPOCHS = 3  # the same cap for every point on two CPU cores; larger machines raise it


def budgeted_compressors(only: tuple[str, ...]) -> list[tuple[str, ...]]:
    """Every registered compressor that can meet a byte budget (plugins included), but the
    dense reference; or those named, each with any options of its own ('hash --hashes 2'),
    as the arguments of its runs."""
    names = budgeted_names()
    asked = [tuple(shlex.split(spec)) for spec in only]
    unknown = [spec[0] if spec else "''" for spec in asked if not spec or spec[0] not in names]
    if unknown:
        raise ConfigError(f"no budgeted compressor {', '.join(unknown)}; one of {', '.join(names)}")
    return asked or [(n,) for n in names]


def frontier_runs(data: str, num_items: int, ratios: tuple[float, ...],
                  specs: list[tuple[str, ...]], repeat_head: bool
                  ) -> tuple[list[tuple[str, ...]], list[str]]:
    """The runs of the frontier (a compressor at a ratio it reaches, for a catalogue of
    `num_items`) and what is out of reach."""
    from ecbench.bench.cli.main import run_config_of
    from ecbench.bench.training.train import apply_budget

    runs, unreachable = [], []
    for ratio in ratios:
        heads = [(), ("--repeat-mixture",)] if repeat_head and ratio == REPEAT_BUDGET else [()]
        for name, *options in specs:
            args = ("--compressor", name, *options, "--ratio", f"{ratio:g}")
            config = run_config_of(["--data", data, *args])  # a mistyped option is an error
            try:
                apply_budget(config, num_items)
            except (ConfigError, ValueError) as exc:
                unreachable.append(f"{shlex.join([name, *options])} at {ratio:g}x: {exc}")
                continue
            runs += [args + head for head in heads]
    return runs, unreachable


@click.command("frontier")
@click.option("--data", default="tmall", show_default=True)
@click.option("--ratio", "ratios", type=float, multiple=True,
              help="byte budgets [tmall: 4 10 30 100; others: 30]")
@click.option("--epochs", type=int, default=DEFAULT_EPOCHS, show_default=True,
              help="the epoch cap of every point (early stopping may end a run sooner)")
@click.option("--seeds", type=int, default=1, show_default=True)
@click.option("--compressor", "only", multiple=True,
              help="only these compressors, each with options of its own if any "
                   "('hash --hashes 2') [every budgeted one at its defaults]")
@click.option("--repeat-head/--no-repeat-head", default=True, show_default=True,
              help=f"also train every compressor at {REPEAT_BUDGET:g}x with the repeat-mixture head")
@click.option("--latency/--no-latency", default=True, show_default=True,
              help="time the trained points (batch 1: eager, ONNX Runtime and ExecuTorch with "
                   "one copy of the table and with XNNPACK's packed copy, where installed) in "
                   "one process")
@click.option("--render-only", is_flag=True, help="train nothing, render what is recorded")
@placement_options
def frontier_command(data: str, ratios: tuple[float, ...], epochs: int, seeds: int,
                     only: tuple[str, ...], repeat_head: bool, latency: bool,
                     render_only: bool, dry_run: bool, **where: Any) -> None:
    """Every budgeted compressor (the registry's, plugins included) trained to each byte
    budget on DATA under one epoch cap, scored deployed, timed at batch 1, and drawn against
    the reference rows that need no compressed table (dense teacher, popularity, session
    recency, session-kNN). Runs what is missing (resumable, any executor; session-kNN once,
    `ecbench knn` for other settings), then writes RESULTS/tables/frontier-DATA.md and
    RESULTS/figures/frontier-DATA.{svg,pdf}."""
    from ecbench.bench.training.train import load_dataset

    if epochs < 1 or seeds < 1:
        raise ConfigError(f"--epochs and --seeds must be positive, got {epochs} and {seeds}")
    ratios = ratios or TARGETS.get(data, (REPEAT_BUDGET,))
    if any(r <= 1 for r in ratios):
        raise ConfigError(f"a budget compresses: every --ratio must exceed 1, got {ratios}")
    placement = Placement(**where)
    dataset = load_dataset(data, placement.data_root)  # read once, for every step below
    runs, unreachable = frontier_runs(data, dataset.num_items, ratios,
                                      budgeted_compressors(only), repeat_head)
    for line in unreachable:
        click.echo(f"out of reach: {line}", err=True)
    spec = SweepSpec(f"frontier-{data}", ("--data", data, "--epochs", str(epochs)),
                     {"--seed": tuple(str(s) for s in range(seeds))}, tuple(runs))
    failed = None
    if not render_only:
        failed = run_sweep(spec, placement, dry_run)
        if dry_run:
            return
        if latency:
            time_recorded_runs(recorded_runs(spec, placement, dataset), placement, dataset,
                               runtimes=("onnx", "executorch", "executorch-packed"), batches=(1,),
                               dense_reference=True)
        run_missing_knn(placement, dataset)
    for path in write_frontier(placement.results_dir, data, epochs):
        click.echo(f"wrote {path}")
    if failed:
        raise click.ClickException(f"{failed} runs failed; rerun to resume them")


def run_missing_knn(where: Placement, dataset: "SessionDataset") -> None:
    """The session-kNN reference rows (SKNN and V-SKNN at their defaults), where the results
    folder has none for `dataset` yet (a minute or two: no training)."""
    from ecbench.bench.deploy.knn_baseline import run_knn
    from ecbench.bench.evaluation.session_knn import METHODS, KNNConfig
    from ecbench.bench.report.all_tables import knn_records

    have = {r["method"] for r in knn_records(where.results_dir)
            if r["dataset"]["name"] == dataset.name}
    for method in [m for m in METHODS if m not in have]:
        _, path = run_knn(KNNConfig(method=method), dataset, results_dir=where.results_dir,
                          threads=1, log=lambda m: click.echo(m, err=True))
        click.echo(f"session-kNN record: {path}", err=True)


def write_frontier(results_dir: Path, data: str, epochs: int) -> list[Path]:
    """Render the frontier table and figure of `data` from the records in `results_dir`."""
    from ecbench.bench.records import atomic_write_bytes, iter_records
    from ecbench.bench.report.all_tables import knn_records, latency_records
    from ecbench.bench.report.frontier import frontier_figure, frontier_table

    runs, knn = list(iter_records(results_dir)), knn_records(results_dir)
    table = Path(results_dir) / "tables" / f"frontier-{data}.md"
    text = frontier_table(runs, knn, latency_records(results_dir), data, epochs)
    atomic_write_bytes(table, (text + "\n").encode())
    written = [table]
    for name, payload in frontier_figure(runs, knn, data, epochs).items():
        written.append(Path(results_dir) / "figures" / name)
        atomic_write_bytes(written[-1], payload)
    return written
