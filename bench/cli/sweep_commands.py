"""`ecbench sweep` (the runs of a spec file, on any executor) and `ecbench reproduce` (the runs
behind one of the paper's tables, then the table)."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import click
from tabulate import tabulate

from ecbench.bench.cli.options import (data_root_option, device_option, results_option,
                                       workdir_option)
from ecbench.bench.errors import ConfigError
from ecbench.bench.report.paper import STUDENT_CODES, TABLE4
from ecbench.bench.sweep import SweepSpec
from ecbench.bench.training.config import build_part_config

if TYPE_CHECKING:
    from ecbench.bench.data.sessions import SessionDataset


@dataclass(frozen=True)
class Placement:
    """Where and how a sweep's runs go (the options `sweep` and `reproduce` share)."""

    executor: str = "local"
    workers: int = 2
    threads: int = 1
    device: str = "auto"
    runs_per_gpu: int = 1
    address: str | None = None
    data_root: str | None = None
    results_dir: Path = Path("ecbench-results")
    workdir: Path = Path(".ecbench")
    max_hours: float | None = None


def placement_options(command: Callable) -> Callable:
    """The options that say where a sweep's runs go."""
    options = [
        click.option("--executor", default="local", show_default=True,
                     help="where runs go: local, ray, or an installed executor plugin"),
        click.option("--workers", type=int, default=2, show_default=True,
                     help="local, on the CPU: runs at a time (workers x --threads <= cores)"),
        click.option("--threads", type=int, default=1, show_default=True,
                     help="threads per run"),
        device_option,
        click.option("--runs-per-gpu", type=int, default=1, show_default=True,
                     help="on GPUs: runs trained at once on each GPU, each its own process"),
        click.option("--address", default=None,
                     help="ray: the cluster to join (ray://HOST:10001 or auto) [a local Ray]"),
        data_root_option, results_option, workdir_option(),
        click.option("--max-hours", type=float, default=None,
                     help="skip a run whose planned training exceeds this many hours where it "
                          "runs (`ecbench run --max-hours`), leaving it for a faster machine "
                          "[no limit]"),
        click.option("--dry-run", is_flag=True,
                     help="check every run and list them, run nothing"),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def job_chains(jobs: list[tuple[str, ...]], data_root: str | None) -> list[list[str]]:
    """Each run's chain of run keys (`runner.chain_keys`), each dataset read once."""
    from ecbench.bench.cli.main import run_config_of
    from ecbench.bench.training.runner import chain_keys
    from ecbench.bench.training.train import load_dataset

    datasets: dict[str, Any] = {}
    chains = []
    for args in jobs:
        config = run_config_of(list(args))
        if config.data not in datasets:
            datasets[config.data] = load_dataset(config.data, data_root)
        chains.append(chain_keys(config, datasets[config.data]))
    return chains


def sweep_devices(spec: str) -> str:
    """The local executor's devices for `--device`: cpu, every GPU (auto or cuda, on a
    machine with CUDA), or the one GPU named."""
    from ecbench.bench.device import cuda_count, resolve_device

    device = resolve_device(spec)
    if device.type == "cpu":
        return "cpu"
    if spec.strip().lower() in ("auto", "cuda"):
        return ",".join(f"cuda:{i}" for i in range(cuda_count()))
    return str(device)


def run_sweep(spec: SweepSpec, where: Placement, dry_run: bool = False) -> str | None:
    """Check every run of `spec`, then run them where `where` says; returns how many of them
    failed ("2 of 8"), None if none did.
    Finished runs are reused, killed ones resume, shared prerequisites train once."""
    from ecbench.bench import sweep
    from ecbench.bench.cli.main import run_config_of

    entry = sweep.registry.get(where.executor)  # an unknown executor is an error, --dry-run too
    if where.max_hours is not None and not where.max_hours > 0:
        raise ConfigError(f"--max-hours must be positive, got {where.max_hours:g}")
    # so is a device this machine lacks (a cluster's executor resolves it where runs go)
    devices = where.device if where.executor != "local" else sweep_devices(where.device)
    common = ["--threads", str(where.threads), "--results", str(where.results_dir),
              "--workdir", str(where.workdir), "--no-progress", "--resume"]
    common += ["--data-root", where.data_root] if where.data_root else []
    common += ["--max-hours", f"{where.max_hours:g}"] if where.max_hours is not None else []
    jobs = [tuple(common) + args for args in spec.jobs()]

    def own(args: tuple[str, ...]) -> str:
        """A run's arguments as the spec gives them (without the sweep's common ones)."""
        return shlex.join(args[len(common):])

    for args in jobs:  # every run's arguments are checked before any starts
        try:
            run_config_of(list(args))
        except (click.ClickException, ConfigError) as exc:
            message = exc.format_message() if isinstance(exc, click.ClickException) else exc
            raise ConfigError(f"sweep {spec.name}: run {own(args)}: {message}") from None
    click.echo(f"sweep {spec.name}: {len(jobs)} runs", err=True)
    if dry_run:
        for args in jobs:
            click.echo(f"ecbench run {own(args)}")
        return None
    offered = {"workers": where.workers, "threads": where.threads,
               "runs_per_gpu": where.runs_per_gpu, "address": where.address,
               "results_dir": str(where.results_dir), "workdir": str(where.workdir),
               "devices": devices}
    declared = {f.name for f in entry.options()}
    options = {k: v for k, v in offered.items() if k in declared and v is not None}
    runner = sweep.registry.build(where.executor,
                                  build_part_config(entry.config, options, where.executor))

    def report(result: sweep.JobResult) -> None:
        state = ("done" if result.ok else f"skipped (over --max-hours; log {result.log})"
                 if result.skipped else f"FAILED (exit {result.returncode}, log {result.log})")
        click.echo(f"{state} in {result.seconds:.0f}s: {own(result.args)}", err=True)

    # an executor that ships prerequisites to where runs go needs each run's chain of keys
    chains = (job_chains(jobs, where.data_root) if getattr(runner, "needs_chains", False)
              else None)
    results = runner.run_all(jobs, logs=Path(where.workdir) / "sweeps" / spec.name,
                             on_done=report, **({"chains": chains} if chains else {}))
    rows = [[own(r.args), "ok" if r.ok else "skipped" if r.skipped else f"exit {r.returncode}",
             r.seconds, r.record or str(r.log)] for r in results]
    click.echo(tabulate(rows, headers=["run", "status", "seconds", "record (or log)"],
                        floatfmt=".0f"))
    skipped = sum(r.skipped for r in results)
    if skipped:
        click.echo(f"{skipped} of {len(results)} runs skipped: their plan exceeds --max-hours "
                   f"{where.max_hours:g} here", err=True)
    failed = sum(not r.ok and not r.skipped for r in results)
    return f"{failed} of {len(results)}" if failed else None


def recorded_runs(spec: SweepSpec, where: Placement, dataset: "SessionDataset") -> list[Path]:
    """The record files of the finished runs of `spec` (runs on `dataset`) whose models are in
    the workdir."""
    from ecbench.bench.cli.main import run_config_of
    from ecbench.bench.records import find_record
    from ecbench.bench.training.plan import key_done
    from ecbench.bench.training.runner import chain_keys

    found = []
    for args in spec.jobs():
        key = chain_keys(run_config_of(list(args)), dataset)[-1]  # its budget solved as it runs
        record = find_record(where.results_dir, key)
        if key_done(key, where.results_dir, where.workdir) and record not in found:
            found.append(record)
    return found


def time_recorded_runs(records: list[Path], where: Placement, dataset: "SessionDataset", *,
                       runtimes: tuple[str, ...], batches: tuple[int, ...],
                       dense_reference: bool = False) -> Path | None:
    """Every recorded run's trained model timed in one process on one thread (eager and
    `runtimes`), with the dense model of their settings beside them if asked and none was
    trained; the latency record's path (None: nothing to time)."""
    from ecbench.bench.deploy import latency
    from ecbench.bench.deploy.export import missing_runtime

    if not records:
        return None
    candidates = [latency.trained_candidate(r, where.workdir, dataset) for r in records]
    if dense_reference and not any(c.config.compressor == "full" and not c.config.ratio
                                   for c in candidates):
        candidates.insert(0, latency.dense_reference(candidates, dataset.num_items))
    usable = tuple(r for r in runtimes if not missing_runtime(r))
    for skipped in sorted(set(runtimes) - set(usable)):
        click.echo(f"not timed on {skipped}: {missing_runtime(skipped)}", err=True)
    _, path = latency.benchmark_latency(candidates, dataset, runtimes=usable, batches=batches,
                                        results_dir=where.results_dir,
                                        artefact_dir=where.workdir / "artefacts", threads=1,
                                        log=lambda m: click.echo(m, err=True))
    click.echo(f"latency record: {path}", err=True)
    return path


@click.command("sweep")
@click.argument("spec", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@placement_options
def sweep_command(spec: Path, dry_run: bool, **where: Any) -> None:
    """Run every `ecbench run` of a sweep SPEC (TOML: base arguments, a grid of option values,
    extra runs; see bench/sweeps/). Finished runs are reused, killed ones resume; runs that
    need the same teacher train it once. Writes a log per run under WORKDIR/sweeps/NAME.

    On GPUs (`--device`), `--runs-per-gpu` runs share each GPU. `--executor ray` sends each
    run to a Ray cluster as a task and brings its records and models back here."""
    from ecbench.bench import sweep

    failed = run_sweep(sweep.load_spec(spec), Placement(**where), dry_run)
    if failed:
        raise click.ClickException(f"{failed} runs failed; rerun the sweep to resume them")


# -- the paper's tables ------------------------------------------------------------------------

# Table 4's most telling cells first, so that a partial table already answers: one codebook of
# 32 codewords for a whole catalogue, the paper's student, and the largest tables.
TELLING_FIRST = [(1, 32), (4, 32), (3, 256), (5, 512)]
# The shapes Table 4 covers on RetailRocket (the paper's full grid is Tmall's).
RETAILROCKET_TABLE4 = [(1, 32), (3, 256), (5, 32), (1, 256), (3, 32), (5, 256)]
BASELINES = ("gru4rec", "narm", "stamp", "srgnn")
ABLATIONS = ("--no-contrastive", "--no-soft", "--no-bidirectional", "--no-mixup")
REPRODUCIBLE = ("table3", "table4", "table5", "fig3")
# Table 5's runtimes beside eager (ExecuTorch with XNNPACK where `.[executorch]` is installed)
TABLE5_RUNTIMES = ("onnx", "executorch", "executorch-packed", "torchscript")


def table4_shapes(data: str) -> list[tuple[int, int]]:
    """Table 4's (M, K) on `data`, the most telling first."""
    grid = RETAILROCKET_TABLE4 if data == "retailrocket" else sorted(TABLE4["tmall"])
    return [s for s in TELLING_FIRST if s in grid] + [s for s in grid if s not in TELLING_FIRST]


def paper_spec(table: str, data: str, seeds: int) -> SweepSpec:
    """The runs behind one of the paper's tables on `data`, by the paper's method: Table 3's
    every row (and, for its labelled column, each row once by the paper's own protocol),
    Table 4's Stu-base at every (M, K), Fig. 3's Student and its four ablations."""
    M, K = STUDENT_CODES[data]
    student = ("--compressor", "ccode", "--M", str(M), "--K", str(K))
    grid = {"--seed": tuple(str(s) for s in range(seeds))}
    base = ("--data", data)
    if table in ("table3", "table5"):
        rows = ((), *(("--backbone", b) for b in BASELINES), ("--compressor", "sttd", "--ratio", "30"),
                student, student + ("--kd", "full"))
        if table == "table5":  # the models to time: one seed of each of Table 3's rows
            return SweepSpec(f"{table}-{data}", base, {"--seed": ("0",)}, rows)
        # seed by seed, so that a partial sweep already fills every row once
        first = tuple(row + ("--seed", "0") for row in rows)
        legacy = tuple(paper_protocol(row) + ("--seed", "0") for row in rows)
        more = tuple(row + ("--seed", str(s)) for s in range(1, seeds) for row in rows)
        return SweepSpec(f"{table}-{data}", base, {}, first + legacy + more)
    if table == "table4":
        runs = tuple(("--compressor", "ccode", "--M", str(m), "--K", str(k))
                     for m, k in table4_shapes(data))
        return SweepSpec(f"table4-{data}", base, {"--seed": ("0",)}, runs)
    if table == "fig3":
        runs = (student + ("--kd", "full"),
                *(student + ("--kd", "full", flag) for flag in ABLATIONS))
        return SweepSpec(f"fig3-{data}", base, grid, runs)
    raise ConfigError(f"no table {table!r} to reproduce; one of {', '.join(REPRODUCIBLE)}")


def paper_protocol(run: tuple[str, ...]) -> tuple[str, ...]:
    """A run of Table 3 by the paper's own protocol (legacy, labelled in the table): each
    metric's best test epoch, and a ccode student scored with the teacher's table mixed in."""
    mixed = ("--eval-table", "mixed") if "ccode" in run else ()
    return run + ("--select-on", "test") + mixed


@click.command("reproduce")
@click.argument("table", type=click.Choice(REPRODUCIBLE))
@click.option("--data", type=click.Choice(sorted(STUDENT_CODES)), default="tmall",
              show_default=True)
@click.option("--seeds", type=int, default=3, show_default=True,
              help="seeds of each run (Table 4: one)")
@placement_options
def reproduce_command(table: str, data: str, seeds: int, dry_run: bool, **where: Any) -> None:
    """Run what one of the paper's tables still lacks on DATA, by the paper's method, then
    render it from every record in --results (`ecbench table`).

    table3: every row (teacher, GRU4Rec, NARM, STAMP, SR-GNN, OD-Rec, Stu-base, Student),
    seed 0 of every row first, then each row once by the paper's protocol (best test epoch,
    students scored with the mixed table; a labelled column), then the other seeds; table4:
    the Stu-base at every (M, K) of the paper's grid, the most telling first; table5: Table 3's
    models (one seed), trained, then timed in one process (eager, ONNX Runtime, ExecuTorch
    where installed, TorchScript; batch 1 and 100); fig3: the Student and its four ablations.
    Resumable: finished runs are reused, so a rerun continues, on any executor (a GPU with
    --device cuda --runs-per-gpu N, a cluster with --executor ray).
    """
    from ecbench.bench.cli.results_commands import table_command

    if seeds < 1:
        raise ConfigError(f"--seeds must be at least 1, got {seeds}")
    placement = Placement(**where)
    spec = paper_spec(table, data, seeds)
    failed = run_sweep(spec, placement, dry_run)
    if dry_run:
        return
    if table == "table5":
        from ecbench.bench.training.train import load_dataset

        dataset = load_dataset(data, placement.data_root)
        time_recorded_runs(recorded_runs(spec, placement, dataset), placement, dataset,
                           runtimes=TABLE5_RUNTIMES, batches=(1, 100))
    click.get_current_context().invoke(
        table_command,
        which={"table3": "3", "table4": "4", "table5": "5", "fig3": "ablation"}[table],
        results_dir=placement.results_dir, out=None, runtime="eager", batch=100, cache="warm")
    if failed:
        raise click.ClickException(f"{failed} runs failed; rerun to resume them (the table "
                                   "above holds what is recorded)")
