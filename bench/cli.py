"""`ecbench`: a thin command line over the library functions."""

from __future__ import annotations

import dataclasses
import os
import shlex
import sys
import typing
from pathlib import Path
from typing import Any, Callable

import click
from tabulate import tabulate

import backbones
import compressors
from bench.config import (RunConfig, backbone_preset, build_part_config, canonical_options,
                          parse_part_options, preset_for)
from bench.errors import ConfigError, EcbenchError

DEFAULT_THREADS = min(2, os.cpu_count() or 1)
SUMMARY_METRICS = ("HR@5", "NDCG@5", "HR@10", "NDCG@10", "HR@20", "NDCG@20", "MRR@20")


def summary_table(record: dict[str, Any]) -> str:
    name = f"{record['config']['backbone']}+{record['config']['compressor']}"
    rows = [[name] + [record["test"][m] for m in SUMMARY_METRICS]]
    rows.append(["popularity"] + [record["baselines"]["popularity"][m] for m in SUMMARY_METRICS])
    table = tabulate(rows, headers=["test"] + list(SUMMARY_METRICS), floatfmt=".2f")
    sel = record["selection"]
    size = record["size"]["item_storage"]
    lines = [
        f"dataset {record['dataset']['name']}  seed {record['seed']}  "
        f"selected epoch {sel['epoch']}/{sel['epochs_run']} on {sel['on']} ({sel['metric']})"
        + (", then refit on all training sessions" if sel.get("refit") else ""),
        table,
        f"item table {size['total_bytes'] / 2**20:.2f} MiB (byte ratio {size['byte_ratio']:.1f}x, "
        f"paper formula {size['paper_ratio']:.1f}x); "
        f"{record['timing']['train_seconds_per_epoch_median']:.1f} s per epoch",
    ]
    if sel["on"] == "test":
        lines.insert(0, "NOTE: " + sel["label"])
    return "\n".join(lines)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Benchmark item-embedding compressors for on-device session-based recommendation."""


_DISTILLATION_OPTIONS = [
    click.option("--kd", type=click.Choice(["none", "full"]), default="none", show_default=True,
                 help="students: distil from the teacher (Section 5, Eq. 27) after pretraining; "
                      "none = pretraining only (the paper's Stu-base)"),
    click.option("--no-contrastive", is_flag=True, help="distil without L_con (Stu-w/o-c)"),
    click.option("--no-bidirectional", is_flag=True,
                 help="freeze the teacher while distilling (Stu-w/o-b)"),
    click.option("--no-soft", is_flag=True, help="distil without L_soft (Stu-w/o-s)"),
    click.option("--no-mixup", is_flag=True, help="no embedding mixup while distilling (Stu-w/o-m)"),
    click.option("--beta", type=float, default=None,
                 help="weight of L_con [paper: 0.01 Tmall, 0.5 RetailRocket]"),
    click.option("--gamma", type=float, default=None, help="weight of L_soft [paper: 0.3]"),
    click.option("--kd-eta", type=float, default=None,
                 help="the student's mixup weight while distilling "
                      "[paper: 0.8 Tmall, 0.7 RetailRocket]"),
    click.option("--eta-schedule", type=click.Choice(["none", "linear", "cosine"]),
                 default="none", show_default=True,
                 help="anneal the distillation's mixup weight to 0 over the epochs"),
    click.option("--kd-epochs", type=int, default=None,
                 help="the distillation's maximum epochs (and the eta schedule's length) "
                      "[--epochs, which the teacher and the pretrained student keep]"),
    click.option("--pretrained", default=None,
                 help="distillation: the student's record, model file or key to start from "
                      "[the same run without --kd, trained first if not recorded]"),
]


def distillation_options(command: Callable) -> Callable:
    """The options of knowledge distillation (bench.distill), shared by `run` and `bench train`."""
    for option in reversed(_DISTILLATION_OPTIONS):
        command = option(command)
    return command


_RUN_HELP = """Train and evaluate one model; write its run record under RESULTS/runs.

Options of the chosen compressor and backbone (see `ecbench list`) follow the general ones,
e.g. `ecbench run --compressor ccode --M 4 --K 32 --layers 1 --dropout 0.5`. Defaults are the
paper's settings for the dataset (Section 6.1.3) where it gives them."""


@cli.command("run", help=_RUN_HELP,
             context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option("--data", default="synthetic", show_default=True,
              help="synthetic, a dataset name under the data root, or a folder")
@click.option("--data-root", default=None, help="folder of named datasets [$ECBENCH_DATA or ./data]")
@click.option("--compressor", default="full", show_default=True)
@click.option("--backbone", default="sasrec", show_default=True)
@click.option("--dim", type=int, default=None, help="embedding size [paper preset, else 64]")
@click.option("--max-len", type=int, default=50, show_default=True,
              help="keep the last N items of a session")
@click.option("--batch-size", type=int, default=100, show_default=True)
@click.option("--lr", type=float, default=1e-3, show_default=True)
@click.option("--l2", type=float, default=1e-5, show_default=True)
@click.option("--epochs", type=int, default=None, help="maximum epochs [30; synthetic 10]")
@click.option("--patience", type=int, default=None, help="stop after N epochs without gain [3]")
@click.option("--select-metric", default="NDCG@10", show_default=True)
@click.option("--select-on", type=click.Choice(["validation", "test"]), default="validation",
              show_default=True, help="test = the paper's legacy best-on-test protocol")
@click.option("--val-fraction", type=float, default=0.1, show_default=True)
@click.option("--val-split", type=click.Choice(["random", "last"]), default="random",
              show_default=True, help="random sessions, or the last ones in file order")
@click.option("--precision", type=click.Choice(["fp32", "bf16"]), default="fp32", show_default=True,
              help="training matmuls in float32, or bfloat16 autocast (evaluation is float32)")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--ratio", type=float, default=None,
              help="a target byte compression ratio: the compressor picks its own size options")
@click.option("--teacher", default=None,
              help="students: the teacher's record, model file or key [the full-table run with "
                   "the same settings, trained first if not recorded]")
@click.option("--student-init", type=click.Choice(["teacher", "random"]), default=None,
              help="students: start the encoder from the teacher's or at random [teacher]")
@distillation_options
@click.option("--threads", type=int, default=DEFAULT_THREADS, show_default=True)
@click.option("--results", "results_dir", type=click.Path(path_type=Path), default=Path("results"),
              show_default=True)
@click.option("--workdir", type=click.Path(path_type=Path), default=Path(".ecbench"),
              show_default=True, help="checkpoints and trained models")
@click.option("--refit", is_flag=True,
              help="after choosing the epoch count on validation, retrain on all training "
                   "sessions for that many epochs (test still seen once)")
@click.option("--resume", is_flag=True, help="continue a killed run from its last checkpoint")
@click.option("--force", is_flag=True, help="rerun even if an identical run is recorded")
@click.option("--progress/--no-progress", default=None, help="progress bars [on a terminal]")
@click.pass_context
def run_command(ctx: click.Context, **opts: Any) -> None:
    from bench.runner import run_experiment

    config = make_run_config(opts, list(ctx.args))
    progress = sys.stderr.isatty() if opts["progress"] is None else opts["progress"]
    record, path = run_experiment(
        config, data_root=opts["data_root"], results_dir=opts["results_dir"],
        workdir=opts["workdir"], resume=opts["resume"], force=opts["force"],
        threads=opts["threads"], progress=progress, log=lambda m: click.echo(m, err=True))
    click.echo(summary_table(record))
    click.echo(f"record: {path}")


def run_config_of(args: list[str]) -> RunConfig:
    """The config an `ecbench run ARGS` would train, without running it (checks the args)."""
    ctx = run_command.make_context("run", list(args))
    return make_run_config(ctx.params, list(ctx.args))


@cli.command("sweep")
@click.argument("spec", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("--executor", default="local", show_default=True,
              help="where runs go: local, or an installed executor plugin")
@click.option("--workers", type=int, default=2, show_default=True,
              help="local: runs at a time (workers x --threads <= cores)")
@click.option("--threads", type=int, default=1, show_default=True, help="threads per run")
@click.option("--data-root", default=None, help="folder of named datasets [$ECBENCH_DATA or ./data]")
@click.option("--results", "results_dir", type=click.Path(path_type=Path), default=Path("results"),
              show_default=True)
@click.option("--workdir", type=click.Path(path_type=Path), default=Path(".ecbench"),
              show_default=True)
@click.option("--dry-run", is_flag=True, help="check the spec and list its runs, run nothing")
def sweep_command(spec: Path, executor: str, workers: int, threads: int, data_root: str | None,
                  results_dir: Path, workdir: Path, dry_run: bool) -> None:
    """Run every `ecbench run` of a sweep SPEC (TOML: base arguments, a grid of option values,
    extra runs; see bench/sweeps/). Finished runs are reused, killed ones resume; runs that
    need the same teacher train it once. Writes a log per run under WORKDIR/sweeps/NAME."""
    from bench import sweep

    loaded = sweep.load_spec(spec)
    common = ["--threads", str(threads), "--results", str(results_dir), "--workdir", str(workdir),
              "--no-progress", "--resume"] + (["--data-root", data_root] if data_root else [])
    jobs = [tuple(common) + args for args in loaded.jobs()]
    for args in jobs:  # every run's arguments are checked before any starts
        try:
            run_config_of(list(args))
        except (click.ClickException, ConfigError) as exc:
            message = exc.format_message() if isinstance(exc, click.ClickException) else exc
            raise ConfigError(f"sweep {loaded.name}: run {shlex.join(args[len(common):])}: "
                              f"{message}") from None
    click.echo(f"sweep {loaded.name}: {len(jobs)} runs", err=True)
    if dry_run:
        for args in jobs:
            click.echo(shlex.join(["ecbench", "run", *args[len(common):]]))
        return
    entry = sweep.registry.get(executor)
    options = {"workers": workers} if "workers" in {f.name for f in entry.options()} else {}
    runner = sweep.registry.build(executor, build_part_config(entry.config, options, executor))
    logs = Path(workdir) / "sweeps" / loaded.name

    def report(result: sweep.JobResult) -> None:
        state = "done" if result.ok else f"FAILED (exit {result.returncode}, log {result.log})"
        click.echo(f"{state} in {result.seconds:.0f}s: {shlex.join(result.args[len(common):])}",
                   err=True)

    results = runner.run_all(jobs, logs=logs, on_done=report)
    rows = [[shlex.join(r.args[len(common):]), "ok" if r.ok else f"exit {r.returncode}",
             r.seconds, r.record or str(r.log)] for r in results]
    click.echo(tabulate(rows, headers=["run", "status", "seconds", "record (or log)"],
                        floatfmt=".0f"))
    failed = sum(not r.ok for r in results)
    if failed:
        raise click.ClickException(f"{failed} of {len(results)} runs failed; rerun the sweep "
                                   "to resume them")


def make_run_config(opts: dict[str, Any], extra: list[str]) -> RunConfig:
    """General options + the chosen parts' options, with the paper's per-dataset presets."""
    comp = compressors.registry.get(opts["compressor"])
    back = backbones.registry.get(opts["backbone"])
    labels = {"compressor": f"compressor {comp.name}", "backbone": f"backbone {back.name}"}
    parsed = parse_part_options(extra, {labels["compressor"]: comp.config,
                                        labels["backbone"]: back.config})
    preset = preset_for(opts["data"])
    backbone_options = backbone_preset(opts["data"], back.name)
    backbone_options.update(parsed[labels["backbone"]])
    general = {k: opts[k] for k in ("dim", "epochs", "patience")}
    for k, v in general.items():
        if v is None:
            general[k] = preset.get(k, RunConfig.__dataclass_fields__[k].default)
    return RunConfig(
        data=opts["data"], compressor=comp.name, backbone=back.name,
        compressor_options=canonical_options(comp.config, parsed[labels["compressor"]]),
        backbone_options=backbone_options,
        dim=general["dim"], max_len=opts["max_len"], batch_size=opts["batch_size"], lr=opts["lr"],
        l2=opts["l2"], epochs=general["epochs"], patience=general["patience"],
        select_metric=opts["select_metric"], select_on=opts["select_on"],
        val_fraction=opts["val_fraction"], val_split=opts["val_split"],
        precision=opts["precision"], seed=opts["seed"], teacher=opts.get("teacher"),
        student_init=opts.get("student_init"), ratio=opts.get("ratio"),
        refit=opts.get("refit") or None,  # None keeps the keys of runs without it
        distill=make_distill_options(opts, preset), pretrained=opts.get("pretrained"))


_KD_SWITCHES = ("no_contrastive", "no_bidirectional", "no_soft", "no_mixup", "beta", "gamma",
                "kd_eta", "kd_epochs", "pretrained")


def make_distill_options(opts: dict[str, Any], preset: dict[str, Any]) -> dict[str, Any] | None:
    """The DistillConfig fields of a `--kd full` run (the paper's per-dataset weights unless
    given); None for plain training."""
    from bench.distill import DistillConfig

    if opts.get("kd", "none") == "none":
        given = [k for k in _KD_SWITCHES if opts.get(k)]
        if given or opts.get("eta_schedule", "none") != "none":
            flag = "--" + (given[0] if given else "eta_schedule").replace("_", "-")
            raise ConfigError(f"{flag} is a distillation option: it needs --kd full")
        return None
    weights = {**preset.get("distill", {})}
    for name, key in (("beta", "beta"), ("gamma", "gamma"), ("kd_eta", "eta")):
        if opts.get(name) is not None:
            weights[key] = opts[name]
    if opts.get("no_mixup"):
        weights["eta"] = 0.0
    try:
        config = DistillConfig(contrastive=not opts.get("no_contrastive"),
                               soft=not opts.get("no_soft"),
                               bidirectional=not opts.get("no_bidirectional"),
                               eta_schedule=opts.get("eta_schedule", "none"),
                               epochs=opts.get("kd_epochs"), **weights)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return dataclasses.asdict(config)


def _describe_options(config_cls: type) -> str:
    hints = typing.get_type_hints(config_cls)
    parts = []
    for f in dataclasses.fields(config_cls):
        hint = hints[f.name]
        kind = ("|".join(map(str, typing.get_args(hint))) if typing.get_origin(hint) is typing.Literal
                else getattr(hint, "__name__", str(hint)))
        parts.append(f"--{f.name.replace('_', '-')} {kind} ({f.default})")
    return ", ".join(parts) or "(no options)"


@cli.command("list")
def list_command() -> None:
    """The registered compressors and backbones (built-in and plugins) with their options."""
    for kind, registry in (("compressors", compressors.registry), ("backbones", backbones.registry)):
        rows = []
        for name in registry.names():
            entry = registry.get(name)
            rows.append([name, entry.description, _describe_options(entry.config), entry.source])
        click.echo(f"{kind}:")
        click.echo(tabulate(rows, headers=["name", "what", "options", "from"]))
        click.echo()


_BENCH_DEFAULTS: dict[str, Any] = {
    "max_len": 50, "lr": 1e-3, "l2": 1e-5, "epochs": None, "patience": None, "dim": None,
    "select_metric": "NDCG@10", "select_on": "validation", "val_fraction": 0.1,
    "val_split": "random", "precision": "fp32", "seed": 0, "batch_size": 100}


@cli.command("size", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option("--data", default="synthetic", show_default=True)
@click.option("--data-root", default=None)
@click.option("--compressor", default="full", show_default=True)
@click.option("--dim", type=int, default=None, help="[paper preset, else 64]")
@click.option("--ratio", type=float, default=None, help="solve the size options for this ratio")
@click.pass_context
def size_command(ctx: click.Context, **opts: Any) -> None:
    """What a compressor's deployed table would store for a dataset, without training it."""
    from bench.train import apply_budget, build_model, load_dataset

    config = make_run_config({**_BENCH_DEFAULTS, **opts, "backbone": "sasrec"}, list(ctx.args))
    data = load_dataset(config.data, opts["data_root"])
    config = apply_budget(config, data.num_items)
    report = build_model(config, data.num_items).compressor.storage()
    rows = [[t.name, "x".join(map(str, t.shape)), t.dtype, t.nbytes] for t in report.tensors]
    options = compressors.registry.get(config.compressor).config(**config.compressor_options)
    click.echo(f"{options} on {data.name}: {data.num_items} rows x dim {config.dim}")
    click.echo(tabulate(rows, headers=["tensor", "shape", "dtype", "bytes"]))
    click.echo(f"total {report.total_bytes} bytes; full table {report.full_bytes} bytes")
    click.echo(f"byte ratio {report.byte_ratio:.2f}x; paper formula {report.paper_ratio:.2f}x"
               + (f"; bit-packed {report.full_bytes / report.packed_bytes:.2f}x"
                  if report.packed_bytes else ""))
    for note in report.notes:
        click.echo(f"note: {note}")


@cli.command("table")
@click.argument("which", type=click.Choice(["runs", "summary", "cases", "3", "4", "ablation", "5"]))
@click.option("--results", "results_dir", type=click.Path(path_type=Path), default=Path("results"),
              show_default=True)
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
    method), `4` (ccode by M and K) and `ablation` (Fig. 3), ours beside the paper's, or `5`
    (the paper's Table 5 from the latency records under RESULTS/bench)."""
    from bench.paper_tables import ablation_table, table3, table4
    from bench.records import atomic_write_bytes, iter_records, load_record
    from bench.tables import cases_table, runs_table, summary_table, table5

    paper_tables = {"3": table3, "4": table4, "ablation": ablation_table}

    if which == "cases":
        by_key = {r["key"]: {**r, "dataset": r["dataset"]["name"]}
                  for r in iter_records(results_dir) if r.get("test_by_case")}
        for path in sorted(Path(results_dir, "analysis").glob("cases-*.json")):
            analysis = load_record(path)
            by_key[analysis["key"]] = analysis
        text = cases_table(by_key.values())
    elif which == "5":
        records = [load_record(p) for p in sorted(Path(results_dir, "bench").glob("latency-*.json"))]
        text = table5(records, runtime=runtime, batch=batch, cache=cache)
    elif which in paper_tables:
        text = paper_tables[which](list(iter_records(results_dir)))
    elif which == "summary":
        text = summary_table(iter_records(results_dir))
    else:
        text = runs_table(iter_records(results_dir))
    click.echo(text)
    if out is not None:
        atomic_write_bytes(Path(out), (text + "\n").encode())


@cli.command("tables")
@click.option("--results", "results_dir", type=click.Path(path_type=Path), default=Path("results"),
              show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="where the tables go [RESULTS/tables]")
def tables_command(results_dir: Path, out: Path | None) -> None:
    """Regenerate every table from the records under RESULTS: runs, seed summary, the paper's
    Tables 3, 4 and 5 (each runtime, batch and cache recorded), Fig. 3 and Fig. 6, analyses."""
    from bench.all_tables import write_all

    for path in write_all(results_dir, out):
        click.echo(f"written: {path}")


@cli.command("analyse")
@click.argument("records", nargs=-1, required=True,
                type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("--data-root", default=None, help="folder of named datasets [$ECBENCH_DATA or ./data]")
@click.option("--workdir", type=click.Path(path_type=Path), default=Path(".ecbench"),
              show_default=True, help="where the runs left their models")
@click.option("--results", "results_dir", type=click.Path(path_type=Path), default=Path("results"),
              show_default=True)
@click.option("--threads", type=int, default=1, show_default=True)
def analyse_command(records: tuple[Path, ...], data_root: str | None, workdir: Path,
                    results_dir: Path, threads: int) -> None:
    """Test metrics of recorded runs by kind of case: the label already in the session (a
    repeat click) or new, a hot or a cold item. Re-ranks the test set with each run's deployed
    model, checks it reproduces the record's test metrics, and writes
    RESULTS/analysis/cases-<record>.json."""
    from bench.analysis import analyse_cases
    from bench.tables import cases_table

    analyses = []
    for record in records:
        result, path = analyse_cases(record, data_root=data_root, workdir=workdir,
                                     results_dir=results_dir, threads=threads)
        click.echo(f"written: {path}", err=True)
        analyses.append(result)
    click.echo(cases_table(analyses))


@cli.command("codes")
@click.argument("records", nargs=-1, required=True,
                type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("--data-root", default=None, help="folder of named datasets [$ECBENCH_DATA or ./data]")
@click.option("--workdir", type=click.Path(path_type=Path), default=Path(".ecbench"),
              show_default=True, help="where the runs left their models")
@click.option("--results", "results_dir", type=click.Path(path_type=Path), default=Path("results"),
              show_default=True)
@click.option("--threads", type=int, default=1, show_default=True)
def codes_command(records: tuple[Path, ...], data_root: str | None, workdir: Path,
                  results_dir: Path, threads: int) -> None:
    """How recorded ccode runs use their codes: codeword usage (the paper's Fig. 6), items one
    codeword apart, and the share of such neighbours among the items ranked above a missed
    label. Writes RESULTS/analysis/codes-<record>.json."""
    from bench.code_analysis import analyse_codes
    from bench.tables import codes_table

    analyses = []
    for record in records:
        result, path = analyse_codes(record, data_root=data_root, workdir=workdir,
                                     results_dir=results_dir, threads=threads)
        click.echo(f"written: {path}", err=True)
        analyses.append(result)
    click.echo(codes_table(analyses))


@cli.group("bench")
def bench_group() -> None:
    """Benchmarks of the hot paths."""


@bench_group.command("train", context_settings={"ignore_unknown_options": True,
                                                "allow_extra_args": True})
@click.option("--data", default="synthetic", show_default=True)
@click.option("--data-root", default=None)
@click.option("--compressor", default="full", show_default=True)
@click.option("--backbone", default="sasrec", show_default=True)
@click.option("--dim", type=int, default=None)
@click.option("--batch-size", type=int, default=100, show_default=True)
@click.option("--precision", type=click.Choice(["fp32", "bf16"]), default="fp32", show_default=True)
@click.option("--steps", type=int, default=300, show_default=True,
              help="timed training steps (after warm-up); 0 = one whole epoch")
@distillation_options
@click.option("--threads", type=int, default=DEFAULT_THREADS, show_default=True)
@click.option("--results", "results_dir", type=click.Path(path_type=Path), default=Path("results"),
              show_default=True)
@click.pass_context
def bench_train_command(ctx: click.Context, **opts: Any) -> None:
    """Training throughput (pairs per second) and seconds per epoch at the paper's settings.

    With `--kd full`, a distillation step (teacher and student together, Eq. 27) is timed.
    Options of the chosen compressor and backbone may follow (`--backbone narm --M 4`)."""
    from bench.benchmarks import benchmark_training

    config = make_run_config({**_BENCH_DEFAULTS, **opts}, list(ctx.args))
    result, path = benchmark_training(config, data_root=opts["data_root"], steps=opts["steps"],
                                      threads=opts["threads"], results_dir=opts["results_dir"])
    rows = [[f"{k} {inner}", value] if isinstance(v, dict) else [k, v]
            for k, v in result["measurements"].items()
            for inner, value in (v.items() if isinstance(v, dict) else [(None, v)])]
    click.echo(tabulate(rows, floatfmt=".3f"))
    click.echo(f"record: {path}")


@bench_group.command("score", context_settings={"ignore_unknown_options": True,
                                                "allow_extra_args": True})
@click.option("--data", default="synthetic", show_default=True)
@click.option("--data-root", default=None)
@click.option("--compressor", default="ccode", show_default=True)
@click.option("--dim", type=int, default=None)
@click.option("--model-file", type=click.Path(path_type=Path, exists=True), default=None,
              help="a trained run's model (.ecbench/models/KEY.pt); default: fresh tables")
@click.option("--repeats", type=int, default=200, show_default=True)
@click.option("--threads", type=int, default=1, show_default=True, help="1 = a phone core")
@click.option("--results", "results_dir", type=click.Path(path_type=Path), default=Path("results"),
              show_default=True)
@click.pass_context
def bench_score_command(ctx: click.Context, **opts: Any) -> None:
    """Deployed scoring against dense `query @ table.T`, batch 1 and 100, one thread."""
    from bench.benchmarks import benchmark_scoring

    config = make_run_config({**_BENCH_DEFAULTS, **opts, "backbone": "sasrec"}, list(ctx.args))
    result, path = benchmark_scoring(config, data_root=opts["data_root"], threads=opts["threads"],
                                     repeats=opts["repeats"], batches=(1, 100),
                                     results_dir=opts["results_dir"],
                                     model_file=opts["model_file"])
    rows = [[batch, m["dense_median_ms"], m["compressor_median_ms"], m["speedup"],
             m["max_abs_difference"], m["top20_identical"]]
            for batch, m in result["measurements"].items()]
    click.echo(tabulate(rows, headers=["", "dense ms", f"{config.compressor} ms", "speedup",
                                       "max |diff|", "top-20 same"], floatfmt=".4g"))
    click.echo(f"record: {path}")


@cli.command("export")
@click.argument("record", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(["onnx", "executorch", "torchscript"]),
              required=True)
@click.option("--workdir", type=click.Path(path_type=Path), default=Path(".ecbench"),
              show_default=True, help="where the run left its model (WORKDIR/models/KEY.pt)")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="artefact path [WORKDIR/artefacts/<record name>.<suffix>]")
@click.option("--top-k", type=int, default=20, show_default=True)
@click.option("--max-batch", type=int, default=128, show_default=True,
              help="largest batch the artefact takes (ExecuTorch plans memory for it)")
def export_command(record: Path, fmt: str, workdir: Path, out: Path | None, top_k: int,
                   max_batch: int) -> None:
    """Export a recorded run's deployed model (sessions -> top-K items) to an on-device format.

    The artefact keeps the compressed form (nothing constant-folded); its size and largest
    stored tensors are printed, and its outputs are checked against eager.
    """
    import torch

    from bench.deploy import DeployedRecommender, load_trained
    from bench.export import SUFFIX, artefact_tensors, example_inputs, export, load

    _, _, model = load_trained(record, workdir)
    path = out or workdir / "artefacts" / f"{record.stem}{SUFFIX[fmt]}"
    deployed = DeployedRecommender(model, k=top_k, exportable=True)
    export(deployed, fmt, path, max_batch=max_batch)
    inputs = example_inputs(deployed.num_items, batch=3, length=7)
    with torch.no_grad():
        got, expected = load(fmt, path)(*inputs), deployed(*inputs)
    difference = float((got[0] - expected[0]).abs().max())
    same = bool((got[1].long() == expected[1]).all())
    click.echo(f"{path}: {path.stat().st_size} bytes; max |score - eager| {difference:.2e}; "
               f"top-{top_k} identical: {same}")
    for array in artefact_tensors(fmt, path)[:5]:
        click.echo(f"  {array.name}  {array.shape if array.shape else ''}  {array.nbytes} bytes")


_LATENCY_HELP = """On-device style latency: one thread, the deployed model, eager and exported.

Models come from run records (`--record`, weights from WORKDIR/models) and/or from compressor
specs at the dataset's shape (`--compressor 'ccode --M 4 --K 32'`, untrained: timing only,
labelled so). `full` at the same shape is always added for the ratios. Sessions are drawn from
the dataset's test set. Writes RESULTS/bench/latency-<data>-<backbones>-<compressors>-t1.json."""


@bench_group.command("latency", help=_LATENCY_HELP)
@click.option("--data", default="synthetic", show_default=True)
@click.option("--data-root", default=None)
@click.option("--record", "records", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              multiple=True, help="a run record whose trained model to time (repeatable)")
@click.option("--workdir", type=click.Path(path_type=Path), default=Path(".ecbench"),
              show_default=True)
@click.option("--compressor", "specs", multiple=True,
              help="a compressor and its options, e.g. 'sttd --rank 64' or 'full --backbone "
                   "narm' (repeatable)")
@click.option("--backbone", default="sasrec", show_default=True,
              help="the backbone of the --compressor specs that name none")
@click.option("--dim", type=int, default=None, help="[paper preset, else 64]")
@click.option("--runtime", "runtimes", multiple=True,
              type=click.Choice(["onnx", "executorch", "torchscript"]),
              help="exported runtimes to time besides eager [all; missing ones are skipped]")
@click.option("--batch", "batches", type=int, multiple=True, help="batch sizes [1 and 100]")
@click.option("--repeats", type=int, default=100, show_default=True)
@click.option("--warmup", type=int, default=10, show_default=True)
@click.option("--sessions", type=int, default=1000, show_default=True,
              help="test sessions to cycle over per batch size")
@click.option("--top-k", type=int, default=20, show_default=True)
@click.option("--threads", type=int, default=1, show_default=True, help="1 = a phone core")
@click.option("--cache", type=click.Choice(["warm", "cold"]), default="warm", show_default=True,
              help="cold: empty the CPU caches before every call (a phone's few MB of cache "
                   "keep nothing of a large table between recommendations)")
@click.option("--results", "results_dir", type=click.Path(path_type=Path), default=Path("results"),
              show_default=True)
@click.option("--artefacts", type=click.Path(path_type=Path), default=None,
              help="where exported artefacts go [WORKDIR/artefacts]")
def bench_latency_command(**opts: Any) -> None:
    import shlex

    from bench.deploy import deployable_model, load_trained
    from bench.latency import Candidate, benchmark_latency
    from bench.train import apply_budget, load_dataset

    data = load_dataset(opts["data"], opts["data_root"])
    candidates = []
    for record in opts["records"]:
        config, rec, model = load_trained(record, opts["workdir"])
        if rec["dataset"]["checksum"] != data.checksum:
            raise ConfigError(f"record {record} was trained on {rec['dataset']['name']}, "
                              f"not on {data.name}")
        candidates.append(Candidate(config, model, {"trained": True, "record": str(record),
                                                    "key": rec["key"]}))
    specs = [shlex.split(spec) for spec in opts["specs"]]
    if not any(c.config.compressor == "full" for c in candidates) and ["full"] not in specs:
        specs.insert(0, ["full"])
    for spec in specs:
        if not spec:
            raise ConfigError("--compressor needs a name, e.g. --compressor 'ccode --M 4'")
        backbone, options = _spec_backbone(spec[1:], opts["backbone"])
        general = {**_BENCH_DEFAULTS, "data": opts["data"], "dim": opts["dim"],
                   "compressor": spec[0], "backbone": backbone}
        config = apply_budget(make_run_config(general, options), data.num_items)
        candidates.append(Candidate(config, deployable_model(config, data.num_items, None)))
    result, path = benchmark_latency(
        candidates, data, runtimes=opts["runtimes"] or ("onnx", "executorch", "torchscript"),
        batches=opts["batches"] or (1, 100), repeats=opts["repeats"], warmup=opts["warmup"],
        sessions=opts["sessions"], top_k=opts["top_k"], results_dir=opts["results_dir"],
        artefact_dir=opts["artefacts"] or opts["workdir"] / "artefacts",
        threads=opts["threads"], cache=opts["cache"], log=lambda m: click.echo(m, err=True))
    click.echo(latency_summary(result))
    click.echo(f"record: {path}")


def _spec_backbone(options: list[str], default: str) -> tuple[str, list[str]]:
    """A latency spec may name its own backbone (`'full --backbone narm'`): that backbone and
    the spec's remaining options."""
    if "--backbone" not in options:
        return default, options
    at = options.index("--backbone")
    if at + 1 >= len(options):
        raise ConfigError("--backbone in a --compressor spec needs a name")
    return options[at + 1], options[:at] + options[at + 2:]


def latency_summary(result: dict[str, Any]) -> str:
    """One row per model, runtime and batch: median, p90, ratio to full, artefact size."""
    rows = []
    for model in result["models"]:
        for runtime, timing in model["runtimes"].items():
            if "batches" not in timing:
                rows.append([model["label"], runtime, "-", timing.get("skipped")
                             or timing.get("failed")])
                continue
            artefact = timing.get("artefact") or {}
            for batch, t in timing["batches"].items():
                rows.append([model["label"], runtime, batch, t["end_to_end"]["median_ms"],
                             t["end_to_end"]["p90_ms"], t.get("ratio_to_full"),
                             artefact.get("bytes")])
    return tabulate(rows, headers=["model", "runtime", "batch", "median ms", "p90 ms",
                                   "/ full", "artefact bytes"], floatfmt=".4g")


def main() -> None:
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        click.echo(f"error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except (EcbenchError, compressors.UnknownEntryError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2 if isinstance(exc, ConfigError) else 1)


if __name__ == "__main__":
    main()
