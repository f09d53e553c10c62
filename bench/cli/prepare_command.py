"""`ecbench prepare`: a raw click log of the field's benchmarks into the standard layout."""

from __future__ import annotations

import click
from tabulate import tabulate

from ecbench.bench.data.raw import RAW_FORMATS


@click.command("prepare")
@click.argument("raw", type=click.Path(dir_okay=False))
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--format", "fmt", type=click.Choice(list(RAW_FORMATS)), required=True,
              help="the log's publisher: CIKM Cup 2016 item views, RecSys Challenge 2015 clicks, "
                   "RetailRocket views grouped into sessions")
@click.option("--test-days", type=float, default=None,
              help="the last days form the test set [diginetica 7, yoochoose 1, retailrocket 7]")
@click.option("--min-support", type=int, default=5, show_default=True,
              help="items clicked fewer times are dropped")
@click.option("--fraction", type=float, default=1.0, show_default=True,
              help="keep the most recent part of the training sessions (YOOCHOOSE 1/64: 0.015625)")
def prepare_command(raw: str, out: str, fmt: str, test_days: float | None, min_support: int,
                    fraction: float) -> None:
    """RAW, a click log as its publisher distributes it, preprocessed as SR-GNN does (sessions
    of one click and items clicked fewer than --min-support times dropped, the last
    --test-days days as the test set, items numbered from 1) into OUT: `all_train_seq.txt`
    and `test.txt`, which `--data OUT` reads, and `prepare.json` with the counts."""
    from ecbench.bench.data.raw import prepare

    _, metadata = prepare(raw, fmt, out, test_days=test_days, min_support=min_support,
                          fraction=fraction)
    counts = metadata["counts"]
    click.echo(tabulate([[counts["train_sessions"], counts["train_pairs"], counts["test_cases"],
                          counts["items"], counts["average_train_length"]]],
                        headers=["train sessions", "train pairs", "test cases", "items",
                                 "avg train length"], floatfmt=".2f", intfmt=","))
    click.echo(f"written: {out}")
