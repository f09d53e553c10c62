"""`ecbench knn`: the session-kNN reference rows (no item table) on a dataset."""

from __future__ import annotations

from pathlib import Path

import click
from tabulate import tabulate

from ecbench.bench.cli.options import data_root_option, results_option
from ecbench.bench.errors import ConfigError

SHOWN = ("HR@10", "NDCG@10", "HR@20", "NDCG@20", "MRR@20")


@click.command("knn")
@click.option("--data", default="synthetic", show_default=True)
@data_root_option
@click.option("--method", type=click.Choice(["sknn", "vsknn"]), default="vsknn",
              show_default=True, help="SKNN (cosine over item sets) or V-SKNN (position-weighted)")
@click.option("--k", "k", type=int, default=100, show_default=True, help="neighbours scored")
@click.option("--sample", type=int, default=500, show_default=True,
              help="the most recent sessions sharing an item that are compared")
@click.option("--latency-repeats", type=int, default=300, show_default=True,
              help="test sessions timed one at a time (median reported)")
@click.option("--threads", type=int, default=1, show_default=True, help="1 = a phone core")
@results_option
def knn_command(data: str, data_root: str | None, method: str, k: int, sample: int,
                latency_repeats: int, threads: int, results_dir: Path) -> None:
    """Session-kNN (Ludewig and Jannach 2018) on DATA: full-ranking test metrics (ties against
    it), the bytes of the past sessions a phone keeps, and batch-1 latency beside the
    dense-table SASRec. Writes a record under RESULTS/baselines."""
    from ecbench.bench.evaluation.session_knn import KNNConfig
    from ecbench.bench.deploy.knn_baseline import run_knn
    from ecbench.bench.training.train import load_dataset

    try:
        config = KNNConfig(method=method, k=k, sample=sample)  # type: ignore[arg-type]
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if latency_repeats < 1:
        raise ConfigError(f"--latency-repeats must be positive, got {latency_repeats}")
    dataset = load_dataset(data, data_root)
    record, path = run_knn(config, dataset, results_dir=results_dir, threads=threads,
                           latency_repeats=latency_repeats,
                           log=lambda m: click.echo(m, err=True))
    storage, latency = record["storage"], record["timing"]["batch1"]
    click.echo(tabulate([[method] + [record["test"][m] for m in SHOWN]
                         + [record["test_tied_percent"]]],
                        headers=["test"] + list(SHOWN) + ["tied %"], floatfmt=".2f"))
    click.echo(f"stores {storage['total_bytes'] / 2**20:.2f} MiB of past sessions "
               f"({storage['byte_ratio']:.1f}x smaller than a dense {storage['full_dim']}-dim "
               f"table); batch-1 {latency['median_ms']:.2f} ms median, "
               f"{latency['ratio_to_dense_sasrec']:.2f}x the dense-table SASRec")
    click.echo(f"record: {path}")
