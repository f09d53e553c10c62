"""`ecbench`: a thin command line over the library functions."""

from __future__ import annotations

import dataclasses
import sys
import textwrap
import typing
from typing import Any

import click
from tabulate import tabulate

from ecbench import backbones
from ecbench import compressors
from ecbench.bench.cli.options import (BENCH_DEFAULTS, chosen_device, chosen_threads,
                                       data_root_option, device_option, distillation_options,
                                       make_run_config, results_option, threads_option,
                                       workdir_option)
from ecbench.bench.training.config import RunConfig
from ecbench.bench.errors import ConfigError, EcbenchError
from ecbench.bench.records import remember_code_state

SUMMARY_METRICS = ("HR@5", "NDCG@5", "HR@10", "NDCG@10", "HR@20", "NDCG@20", "MRR@20")


def summary_table(record: dict[str, Any]) -> str:
    name = f"{record['config']['backbone']}+{record['config']['compressor']}"
    rows = [[name] + [record["test"][m] for m in SUMMARY_METRICS]]
    if record.get("test_mixed_table"):
        rows.append([f"{name} (legacy: teacher table mixed in)"]
                    + [record["test_mixed_table"][m] for m in SUMMARY_METRICS])
    if record.get("test_compressed_table"):
        rows.append([f"{name} (compressed table alone)"]
                    + [record["test_compressed_table"][m] for m in SUMMARY_METRICS])
    rows += [[name] + [metrics[m] for m in SUMMARY_METRICS]
             for name, metrics in record["baselines"].items()]
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


_RUN_HELP = """Train and evaluate one model; write its run record under RESULTS/runs.

Options of the chosen compressor and backbone (see `ecbench list`) follow the general ones,
e.g. `ecbench run --compressor ccode --M 4 --K 32 --layers 1 --dropout 0.5`. Defaults are the
paper's settings for the dataset (Section 6.1.3) where it gives them."""


@cli.command("run", help=_RUN_HELP,
             context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option("--data", default="synthetic", show_default=True,
              help="synthetic, a dataset name under the data root, or a folder")
@data_root_option
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
@click.option("--dropout-epochs", type=int, default=None,
              help="dropout in the first N epochs only, then off, as the paper's released code "
                   "trains [every epoch]")
@click.option("--repeat-bonus", is_flag=True,
              help="add a learned bonus to the scores of the session's own items (repeat "
                   "clicks; beyond the paper, see backbones/repeat.py)")
@click.option("--repeat-mixture", is_flag=True,
              help="score the session's own items and the others as RepeatNet's repeat/explore "
                   "mixture (beyond the paper, see backbones/repeat.py)")
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
@threads_option
@device_option
@results_option
@workdir_option("checkpoints and trained models")
@click.option("--refit", is_flag=True,
              help="after choosing the epoch count on validation, retrain on all training "
                   "sessions for that many epochs (test still seen once)")
@click.option("--resume", is_flag=True, help="continue a killed run from its last checkpoint")
@click.option("--force", is_flag=True, help="rerun even if an identical run is recorded")
@click.option("--plan-only", is_flag=True,
              help="say what the run would train (teacher, Stu-base, distillation) and an upper "
                   "bound on its time, then stop")
@click.option("--max-hours", type=float, default=None,
              help="train nothing if that bound exceeds this many hours (exit code 3: a sweep "
                   "reports the run as skipped, left for a faster machine) [no limit]")
@click.option("--progress/--no-progress", default=None, help="progress bars [on a terminal]")
@click.pass_context
def run_command(ctx: click.Context, **opts: Any) -> None:
    from ecbench.bench.training.runner import plan_run, run_experiment

    config = make_run_config(opts, list(ctx.args))
    if opts["plan_only"]:
        click.echo(plan_run(config, data_root=opts["data_root"], results_dir=opts["results_dir"],
                            workdir=opts["workdir"], threads=chosen_threads(opts["threads"]),
                            device=chosen_device(opts["device"])), err=True)
        return
    progress = sys.stderr.isatty() if opts["progress"] is None else opts["progress"]
    record, path = run_experiment(
        config, data_root=opts["data_root"], results_dir=opts["results_dir"],
        workdir=opts["workdir"], resume=opts["resume"], force=opts["force"],
        threads=chosen_threads(opts["threads"]), progress=progress,
        log=lambda m: click.echo(m, err=True), device=chosen_device(opts["device"]),
        max_hours=opts["max_hours"])
    click.echo(summary_table(record))
    click.echo(f"record: {path}")


def run_config_of(args: list[str]) -> RunConfig:
    """The config an `ecbench run ARGS` would train, without running it (checks the args)."""
    ctx = run_command.make_context("run", list(args))
    return make_run_config(ctx.params, list(ctx.args))


def _describe_options(config_cls: type) -> list[str]:
    """Each option as `--name type=default`."""
    hints = typing.get_type_hints(config_cls)
    parts = []
    for f in dataclasses.fields(config_cls):
        hint = hints[f.name]
        kind = ("|".join(map(str, typing.get_args(hint))) if typing.get_origin(hint) is typing.Literal
                else getattr(hint, "__name__", str(hint)))
        kind = kind.replace(" | ", "|")
        # no-break spaces keep an option and its type on one line when the list is wrapped
        parts.append(f"--{f.name.replace('_', '-')}\u00a0{kind}={f.default}")
    return parts


LIST_WIDTH = 100


@cli.command("list")
def list_command() -> None:
    """The registered compressors and backbones (built-in and plugins) with their options."""
    for kind, registry in (("compressors", compressors.registry), ("backbones", backbones.registry)):
        click.echo(f"{kind}:")
        for name in registry.names():
            entry = registry.get(name)
            source = "" if entry.source.startswith("ecbench.") else f" [plugin: {entry.source}]"
            click.echo(textwrap.fill(f"{name:<9} {entry.description}{source}", LIST_WIDTH,
                                     initial_indent="  ", subsequent_indent=" " * 12))
            options = _describe_options(entry.config) or ["(no options)"]
            click.echo(textwrap.fill("  ".join(options), LIST_WIDTH, initial_indent=" " * 12,
                                     subsequent_indent=" " * 12, break_on_hyphens=False
                                     ).replace("\u00a0", " "))
        click.echo()


@cli.command("size", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option("--data", default="synthetic", show_default=True)
@data_root_option
@click.option("--compressor", default="full", show_default=True)
@click.option("--dim", type=int, default=None, help="[paper preset, else 64]")
@click.option("--ratio", type=float, default=None, help="solve the size options for this ratio")
@click.pass_context
def size_command(ctx: click.Context, **opts: Any) -> None:
    """What a compressor's deployed table would store for a dataset, without training it."""
    from ecbench.bench.training.train import apply_budget, build_model, load_dataset

    config = make_run_config({**BENCH_DEFAULTS, **opts, "backbone": "sasrec"}, list(ctx.args))
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


def _add_commands() -> None:
    from ecbench.bench.cli.bench_commands import bench_group, export_command
    from ecbench.bench.cli.frontier_command import frontier_command
    from ecbench.bench.cli.knn_command import knn_command
    from ecbench.bench.cli.prepare_command import prepare_command
    from ecbench.bench.cli.results_commands import (analyse_command, codes_command,
                                                    curate_command, table_command,
                                                    tables_command)
    from ecbench.bench.cli.sweep_commands import reproduce_command, sweep_command

    for command in (sweep_command, reproduce_command, table_command, tables_command,
                    curate_command, analyse_command, codes_command, bench_group,
                    export_command, knn_command, frontier_command, prepare_command):
        cli.add_command(command)


_add_commands()


def reserve_general_options() -> None:
    """The flags of the commands that also take part options are the command line's own: a
    compressor or backbone declaring one of them is refused (it would be shadowed)."""
    bench_train = typing.cast(click.Group, cli.commands["bench"]).commands["train"]
    flags = {flag: f"the general option {flag} of `ecbench {name}`"
             for name, command in (("run", run_command), ("size", size_command),
                                   ("bench train", bench_train))
             for param in command.params if isinstance(param, click.Option)
             for flag in param.opts + param.secondary_opts}
    compressors.registry.reserve(flags)
    backbones.registry.reserve(flags)


def main() -> None:
    remember_code_state()  # the code this process runs, whatever the checkout holds later
    try:
        reserve_general_options()
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        click.echo(f"error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except (EcbenchError, compressors.UnknownEntryError, compressors.OptionClashError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(getattr(exc, "exit_code", 2 if isinstance(exc, ConfigError) else 1))


if __name__ == "__main__":
    main()
