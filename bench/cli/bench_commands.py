"""Benchmark commands (training throughput, deployed scoring, on-device latency) and export."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from tabulate import tabulate

from ecbench.bench.cli.options import (BENCH_DEFAULTS, chosen_device, chosen_threads,
                                       data_root_option, device_option, distillation_options,
                                       make_run_config, results_option, threads_option,
                                       workdir_option)
from ecbench.bench.deploy.export import FORMATS
from ecbench.bench.errors import ConfigError


@click.group("bench")
def bench_group() -> None:
    """Benchmarks of the hot paths."""


@bench_group.command("train", context_settings={"ignore_unknown_options": True,
                                                "allow_extra_args": True})
@click.option("--data", default="synthetic", show_default=True)
@data_root_option
@click.option("--compressor", default="full", show_default=True)
@click.option("--backbone", default="sasrec", show_default=True)
@click.option("--dim", type=int, default=None)
@click.option("--batch-size", type=int, default=100, show_default=True)
@click.option("--precision", type=click.Choice(["fp32", "bf16"]), default="fp32", show_default=True)
@click.option("--steps", type=int, default=300, show_default=True,
              help="timed training steps (after warm-up); 0 = one whole epoch")
@distillation_options
@threads_option
@device_option
@results_option
@click.pass_context
def bench_train_command(ctx: click.Context, **opts: Any) -> None:
    """Training throughput (pairs per second) and seconds per epoch at the paper's settings.

    With `--kd full`, a distillation step (teacher and student together, Eq. 27) is timed.
    Options of the chosen compressor and backbone may follow (`--backbone narm --M 4`)."""
    from ecbench.bench.training.benchmarks import benchmark_training

    config = make_run_config({**BENCH_DEFAULTS, **opts}, list(ctx.args))
    result, path = benchmark_training(config, data_root=opts["data_root"], steps=opts["steps"],
                                      threads=chosen_threads(opts["threads"]),
                                      results_dir=opts["results_dir"],
                                      device=chosen_device(opts["device"]))
    rows = [[f"{k} {inner}", value] if isinstance(v, dict) else [k, v]
            for k, v in result["measurements"].items()
            for inner, value in (v.items() if isinstance(v, dict) else [(None, v)])]
    click.echo(tabulate(rows, floatfmt=".3f"))
    click.echo(f"record: {path}")


@bench_group.command("threads")
@click.option("--data", default="synthetic", show_default=True)
@data_root_option
@click.option("--steps", type=int, default=30, show_default=True,
              help="timed training steps per condition (after warm-up)")
@results_option
def bench_threads_command(data: str, data_root: str | None, steps: int, results_dir: Path
                          ) -> None:
    """Whether the thread default holds on a busy machine: training steps alone
    (`--threads auto`), beside a competing busy process with auto, and beside it with 2
    threads fixed, each its own process; slowdowns against alone."""
    from ecbench.bench.training.thread_benchmark import benchmark_threads

    result, path = benchmark_threads(data=data, data_root=data_root, steps=steps,
                                     results_dir=results_dir,
                                     log=lambda m: click.echo(m, err=True))
    rows = [[name, c["threads_option"], c["threads"], c["median_step_seconds"] * 1e3,
             c["slowdown_vs_alone"]] for name, c in result["conditions"].items()]
    click.echo(tabulate(rows, headers=["condition", "--threads", "threads", "ms a step",
                                       "x alone"], floatfmt=".2f"))
    click.echo(f"record: {path}")


@bench_group.command("memory", context_settings={"ignore_unknown_options": True,
                                                 "allow_extra_args": True})
@click.option("--data", default="synthetic", show_default=True)
@data_root_option
@click.option("--compressor", default="full", show_default=True)
@click.option("--dim", type=int, default=None)
@click.option("--steps", type=int, default=30, show_default=True,
              help="training steps before the evaluation")
@click.option("--synthetic-items", type=int, default=None,
              help="with --data synthetic: a generated catalogue of this many items (and 2.5x "
                   "as many sessions)")
@results_option
@click.pass_context
def bench_memory_command(ctx: click.Context, **opts: Any) -> None:
    """Peak memory of training steps and of a full-ranking evaluation of the test set, in one
    process; evaluation should stay within about 1.5x of training."""
    from ecbench.bench.data.synthetic import SyntheticConfig, synthetic_dataset
    from ecbench.bench.training.benchmarks import benchmark_memory

    dataset = None
    if opts["synthetic_items"]:
        if opts["data"] != "synthetic":
            raise ConfigError("--synthetic-items goes with --data synthetic")
        items = opts["synthetic_items"]
        dataset = synthetic_dataset(SyntheticConfig(num_items=items, num_sessions=5 * items // 2,
                                                    num_topics=max(40, items // 500)))
    config = make_run_config({**BENCH_DEFAULTS, **opts, "backbone": "sasrec"}, list(ctx.args))
    result, path = benchmark_memory(config, data_root=opts["data_root"], steps=opts["steps"],
                                    results_dir=opts["results_dir"], dataset=dataset)
    m = result["measurements"]
    click.echo(tabulate([[phase, mb] for phase, mb in m["peak_mb"].items()],
                        headers=["after", "peak MiB"], floatfmt=".0f"))
    click.echo(f"evaluation / training: {m['evaluation_over_training']:.2f}x over "
               f"{m['test_cases']:,} test cases and {m['num_items']:,} items "
               f"(scored {m['eval_batch_size']} at a time)")
    click.echo(f"record: {path}")


@bench_group.command("score", context_settings={"ignore_unknown_options": True,
                                                "allow_extra_args": True})
@click.option("--data", default="synthetic", show_default=True)
@data_root_option
@click.option("--compressor", default="ccode", show_default=True)
@click.option("--dim", type=int, default=None)
@click.option("--model-file", type=click.Path(path_type=Path, exists=True), default=None,
              help="a trained run's model (.ecbench/models/KEY.pt); default: fresh tables")
@click.option("--repeats", type=int, default=200, show_default=True)
@click.option("--threads", type=int, default=1, show_default=True, help="1 = a phone core")
@results_option
@click.pass_context
def bench_score_command(ctx: click.Context, **opts: Any) -> None:
    """Deployed scoring against dense `query @ table.T`, batch 1 and 100, one thread."""
    from ecbench.bench.training.benchmarks import benchmark_scoring

    config = make_run_config({**BENCH_DEFAULTS, **opts, "backbone": "sasrec"}, list(ctx.args))
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


_LATENCY_HELP = """On-device style latency: one thread, the deployed model, eager and exported.

Models come from run records (`--record`, weights from WORKDIR/models) and/or from compressor
specs at the dataset's shape (`--compressor 'ccode --M 4 --K 32'`, untrained: timing only,
labelled so). `full` at the same shape is always added for the ratios. Sessions are drawn from
the dataset's test set. Writes RESULTS/bench/latency-<data>-<backbones>-<compressors>-t1.json."""


@bench_group.command("latency", help=_LATENCY_HELP)
@click.option("--data", default="synthetic", show_default=True)
@data_root_option
@click.option("--record", "records", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              multiple=True, help="a run record whose trained model to time (repeatable)")
@workdir_option()
@click.option("--compressor", "specs", multiple=True,
              help="a compressor and its options, e.g. 'sttd --rank 64', 'full --backbone "
                   "narm' or 'ccode --M 4 --repeat-mixture' (repeatable)")
@click.option("--backbone", default="sasrec", show_default=True,
              help="the backbone of the --compressor specs that name none")
@click.option("--dim", type=int, default=None, help="[paper preset, else 64]")
@click.option("--runtime", "runtimes", multiple=True, type=click.Choice(FORMATS),
              help="exported runtimes to time besides eager (executorch-packed: XNNPACK's own "
                   "copy of every float weight, packed at load) [all; missing ones are skipped]")
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
@results_option
@click.option("--artefacts", type=click.Path(path_type=Path), default=None,
              help="where exported artefacts go [WORKDIR/artefacts]")
def bench_latency_command(**opts: Any) -> None:
    import shlex

    from ecbench.bench.deploy.recommender import deployable_model
    from ecbench.bench.deploy.latency import Candidate, benchmark_latency, trained_candidate
    from ecbench.bench.training.train import apply_budget, load_dataset

    data = load_dataset(opts["data"], opts["data_root"])
    candidates = [trained_candidate(record, opts["workdir"], data) for record in opts["records"]]
    specs = [shlex.split(spec) for spec in opts["specs"]]
    if not any(c.config.compressor == "full" for c in candidates) and ["full"] not in specs:
        specs.insert(0, ["full"])
    for spec in specs:
        if not spec:
            raise ConfigError("--compressor needs a name, e.g. --compressor 'ccode --M 4'")
        backbone, options = _spec_backbone(spec[1:], opts["backbone"])
        heads, options = _spec_heads(options)
        general = {**BENCH_DEFAULTS, "data": opts["data"], "dim": opts["dim"],
                   "compressor": spec[0], "backbone": backbone, **heads}
        config = apply_budget(make_run_config(general, options), data.num_items)
        candidates.append(Candidate(config, deployable_model(config, data.num_items, None)))
    result, path = benchmark_latency(
        candidates, data, runtimes=opts["runtimes"] or FORMATS,
        batches=opts["batches"] or (1, 100), repeats=opts["repeats"], warmup=opts["warmup"],
        sessions=opts["sessions"], top_k=opts["top_k"], results_dir=opts["results_dir"],
        artefact_dir=opts["artefacts"] or opts["workdir"] / "artefacts",
        threads=opts["threads"], cache=opts["cache"], log=lambda m: click.echo(m, err=True))
    click.echo(latency_summary(result))
    click.echo(f"record: {path}")


SPEC_HEADS = {"--repeat-bonus": "repeat_bonus", "--repeat-mixture": "repeat_mixture"}


def _spec_heads(options: list[str]) -> tuple[dict[str, bool], list[str]]:
    """A latency spec may add a repeat head (`'ccode --M 4 --repeat-mixture'`), a flag as in
    `ecbench run`: the head's run-config fields, and the spec's remaining options."""
    return ({SPEC_HEADS[o]: True for o in options if o in SPEC_HEADS},
            [o for o in options if o not in SPEC_HEADS])


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
            if "batches" not in timing:  # why the runtime has no timing, in its own column
                rows.append([model["label"], runtime, "-", None, None, None, None,
                             (timing.get("skipped") or timing.get("failed"))[:80]])
                continue
            artefact = timing.get("artefact") or {}
            for batch, t in timing["batches"].items():
                rows.append([model["label"], runtime, batch, t["end_to_end"]["median_ms"],
                             t["end_to_end"]["p90_ms"], t.get("ratio_to_full"),
                             artefact.get("bytes")])
    return tabulate(rows, headers=["model", "runtime", "batch", "median ms", "p90 ms",
                                   "/ full", "artefact bytes", "not timed"], floatfmt=".4g",
                    missingval="")


@click.command("export")
@click.argument("record", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(FORMATS), required=True)
@workdir_option("where the run left its model (WORKDIR/models/KEY.pt)")
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

    from ecbench.bench.deploy.recommender import DeployedRecommender, load_trained
    from ecbench.bench.deploy.export import (SUFFIX, agreement, artefact_tensors, example_inputs,
                                             export, load)

    _, _, model = load_trained(record, workdir)
    path = out or workdir / "artefacts" / f"{record.stem}{SUFFIX[fmt]}"
    deployed = DeployedRecommender(model, k=top_k, exportable=True)
    export(deployed, fmt, path, max_batch=max_batch)
    inputs = example_inputs(deployed.num_items, batch=3, length=7)
    with torch.no_grad():
        check = agreement(load(fmt, path)(*inputs), deployed(*inputs), top_k)
    click.echo(f"{path}: {path.stat().st_size} bytes; max |score - eager| "
               f"{check['max_abs_score_difference']:.2e}; top-{top_k} identical: "
               f"{check[f'top{top_k}_identical']}")
    for array in artefact_tensors(fmt, path)[:5]:
        click.echo(f"  {array.name}  {array.shape if array.shape else ''}  {array.nbytes} bytes")
