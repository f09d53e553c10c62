"""Command-line options into a RunConfig: the general options, the chosen parts' own options,
the distillation switches, and the paper's per-dataset presets (shared by every command that
builds a run's config)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import click

from ecbench import backbones
from ecbench import compressors
from ecbench.bench.training.config import (RunConfig, backbone_preset, canonical_options,
                                           compressor_preset, parse_part_options, preset_for)
from ecbench.bench.cpu import AUTO_THREADS_CAP, resolve_threads
from ecbench.bench.errors import ConfigError
from ecbench.bench.records import CURATED_RESULTS, USER_RESULTS, ensure_writable

if TYPE_CHECKING:
    import torch

threads_option = click.option(
    "--threads", default="auto", show_default=True,
    help="torch threads: a number, or auto = the cores other work leaves idle at the start "
         "(at most 2; threads that share a busy core stall each other)")


def chosen_threads(value: str) -> int:
    """`--threads` resolved, saying on stderr what auto chose."""
    threads = resolve_threads(value)
    if value == "auto":
        click.echo(f"threads: {threads} (auto: the cores other work leaves idle of "
                   f"{os.cpu_count() or 1}, at most {AUTO_THREADS_CAP}; --threads N sets it)",
                   err=True)
    return threads

device_option = click.option(
    "--device", default="auto", show_default=True,
    help="where training and evaluation run: auto (a CUDA GPU when there is one, else the "
         "CPU), cpu, cuda or cuda:N; not part of a run's key, recorded in its provenance")


def chosen_device(value: str) -> "torch.device":
    """`--device` resolved, saying on stderr when auto chose a GPU."""
    from ecbench.bench.device import describe_device, resolve_device

    device = resolve_device(value)
    if value == "auto" and device.type != "cpu":
        name = describe_device(device).get("name")
        click.echo(f"device: {device}{f' ({name})' if name else ''} (auto; --device sets it)",
                   err=True)
    return device


# The locations every command shares, declared once.
data_root_option = click.option("--data-root", default=None,
                                help="folder of named datasets [$ECBENCH_DATA or ./data]")
def _writable_results(ctx: click.Context, param: click.Parameter, value: Path) -> Path:
    ensure_writable(value)
    return value


results_option = click.option(
    "--results", "results_dir", type=click.Path(path_type=Path, file_okay=False),
    default=USER_RESULTS, show_default=True, callback=_writable_results,
    help="where records go: a folder of your own [$ECBENCH_RESULTS]; the project's curated "
         "records are added with `ecbench curate`")
curated_results_option = click.option(
    "--results", "results_dir", type=click.Path(path_type=Path, file_okay=False),
    default=CURATED_RESULTS if CURATED_RESULTS.is_dir() else USER_RESULTS,
    show_default=True, help="the records to render: the project's curated ones (only those its "
                            "manifest.json lists) or a folder of your own (all its records)")


def workdir_option(help: str = "checkpoints, trained models and artefacts") -> Callable:
    return click.option("--workdir", type=click.Path(path_type=Path), default=Path(".ecbench"),
                        show_default=True, help=help)


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
    click.option("--teacher-table", type=click.Choice(["live", "copy"]), default="live",
                 show_default=True,
                 help="what the student's mixup, reconstruction and code encoder read while "
                      "distilling: the teacher's current table (Algorithm 1) or the copy made "
                      "before pretraining (a variant of ours)"),
    click.option("--kd-reduction", type=click.Choice(["sum", "mean"]), default="sum",
                 show_default=True,
                 help="L_con and L_soft summed over the batch (the paper's Eq. 20 and released "
                      "code, the scale beta and gamma were set for) or averaged (ours)"),
    click.option("--released-code-loop", is_flag=True,
                 help="legacy: distil as the paper's released code does (teacher never stepped, "
                      "its dropout on, W_t and W_s left at their initialisation); labelled"),
    click.option("--pretrained", default=None,
                 help="distillation: the student's record, model file or key to start from "
                      "[the same run without --kd, trained first if not recorded]"),
]


def distillation_options(command: Callable) -> Callable:
    """The options of knowledge distillation (`ecbench.bench.training.distill`), shared by
    `run` and `bench train`."""
    for option in reversed(_DISTILLATION_OPTIONS):
        command = option(command)
    return command


def make_run_config(opts: dict[str, Any], extra: list[str]) -> RunConfig:
    """General options + the chosen parts' options, with the paper's per-dataset presets."""
    comp = compressors.registry.get(opts["compressor"])
    back = backbones.registry.get(opts["backbone"])
    labels = {"compressor": f"compressor {comp.name}", "backbone": f"backbone {back.name}"}
    parsed = parse_part_options(extra, {labels["compressor"]: comp.config,
                                        labels["backbone"]: back.config},
                                general=compressors.registry.reserved_flags)
    preset = preset_for(opts["data"])
    backbone_options = backbone_preset(opts["data"], back.name)
    backbone_options.update(parsed[labels["backbone"]])
    general = {k: opts[k] for k in ("dim", "epochs", "patience")}
    for k, v in general.items():
        if v is None:
            general[k] = preset.get(k, RunConfig.__dataclass_fields__[k].default)
    return RunConfig(
        data=opts["data"], compressor=comp.name, backbone=back.name,
        compressor_options=canonical_options(
            comp.config, {**compressor_preset(opts["data"], comp.name),
                          **parsed[labels["compressor"]]}),
        backbone_options=backbone_options,
        dim=general["dim"], max_len=opts["max_len"], batch_size=opts["batch_size"], lr=opts["lr"],
        l2=opts["l2"], epochs=general["epochs"], patience=general["patience"],
        select_metric=opts["select_metric"], select_on=opts["select_on"],
        val_fraction=opts["val_fraction"], val_split=opts["val_split"],
        precision=opts["precision"], seed=opts["seed"], teacher=opts.get("teacher"),
        student_init=opts.get("student_init"), ratio=opts.get("ratio"),
        refit=opts.get("refit") or None,  # None keeps the keys of runs without it
        dropout_epochs=opts.get("dropout_epochs"),
        repeat_bonus=opts.get("repeat_bonus") or None,
        repeat_mixture=opts.get("repeat_mixture") or None,
        distill=make_distill_options(opts, preset), pretrained=opts.get("pretrained"))


_KD_SWITCHES = ("no_contrastive", "no_bidirectional", "no_soft", "no_mixup", "beta", "gamma",
                "kd_eta", "kd_epochs", "pretrained", "released_code_loop")
# distillation options whose command-line default is not "given" (checked apart)
_KD_CHOICES = {"eta_schedule": "none", "teacher_table": "live", "kd_reduction": "sum"}


def make_distill_options(opts: dict[str, Any], preset: dict[str, Any]) -> dict[str, Any] | None:
    """The DistillConfig fields of a `--kd full` run (the paper's per-dataset weights unless
    given); None for plain training."""
    from ecbench.bench.training.distill import DistillConfig

    if opts.get("kd", "none") == "none":
        given = [k for k in _KD_SWITCHES if opts.get(k)]
        given += [k for k, default in _KD_CHOICES.items() if opts.get(k, default) != default]
        if given:
            raise ConfigError(f"--{given[0].replace('_', '-')} is a distillation option: it "
                              "needs --kd full")
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
                               teacher_table=opts.get("teacher_table", "live"),
                               reduction=opts.get("kd_reduction", "sum"),
                               released_code=bool(opts.get("released_code_loop")),
                               epochs=opts.get("kd_epochs"), **weights)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return dataclasses.asdict(config)


BENCH_DEFAULTS: dict[str, Any] = {
    "max_len": 50, "lr": 1e-3, "l2": 1e-5, "epochs": None, "patience": None, "dim": None,
    "select_metric": "NDCG@10", "select_on": "validation", "val_fraction": 0.1,
    "val_split": "random", "precision": "fp32", "seed": 0, "batch_size": 100}
