"""`ecbench frontier`: budgeted runs trained and timed, then the table whose first answer is
the best compressor at each budget, checked against the records it was built from."""

from __future__ import annotations

import copy
import json
import re
import xml.etree.ElementTree as ET

import pytest

from ecbench.bench.report.frontier import frontier_table, frontier_views
from helpers import run_cli


@pytest.fixture(scope="module")
def frontier(tmp_path_factory):
    root = tmp_path_factory.mktemp("frontier")
    done = run_cli(["frontier", "--data", "synthetic", "--ratio", "10", "--ratio", "2000",
                    "--epochs", "1", "--compressor", "hash", "--compressor", "qr",
                    "--compressor", "hash --hashes 2",
                    "--no-repeat-head", "--workers", "1", "--threads", "1",
                    "--results", str(root / "results"), "--workdir", str(root / "work")],
                   cwd=root, timeout=600)
    assert done.returncode == 0, done.stderr
    return root / "results", done


def test_unreachable_budgets_are_named_and_skipped(frontier):
    results, done = frontier
    assert "out of reach: hash at 2000x" in done.stderr
    runs = [json.loads(p.read_text()) for p in (results / "runs").glob("*.json")]
    assert sorted((r["config"]["compressor"], r["config"]["compressor_options"].get("hashes", 1),
                   r["config"]["ratio"]) for r in runs) == [
        ("hash", 1, 10.0), ("hash", 2, 10.0), ("qr", 1, 10.0)]
    assert all(r["config"]["epochs"] == 1 for r in runs)


def test_the_best_at_each_budget_and_every_row_come_from_the_records(frontier):
    results, _ = frontier
    runs = {r["key"]: r for r in (json.loads(p.read_text()) for p in (results / "runs").glob("*.json"))}
    table = (results / "tables" / "frontier-synthetic.md").read_text()
    best = max(runs.values(), key=lambda r: r["test"]["HR@10"])
    assert re.search(rf"- 10x: \*\*{best['config']['compressor']} ", table)
    for key, record in runs.items():
        row = next(line for line in table.splitlines() if line.endswith(f"| {key} |"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert float(cells[2]) == pytest.approx(record["test"]["HR@10"], abs=0.005)
        kib = record["size"]["item_storage"]["total_bytes"] / 1024
        assert float(cells[5]) == pytest.approx(kib, abs=0.5)
        assert cells[7] != "not timed"


def test_a_budget_where_every_point_scores_nothing_names_no_best(frontier):
    results, _ = frontier
    runs = [json.loads(p.read_text()) for p in (results / "runs").glob("*.json")]
    for record in runs:
        record["test"]["HR@10"] = 0.0
    table = frontier_table(runs, [], [], "synthetic", 1)
    assert "- 10x: none: every point scores 0 HR@10" in table and "**" not in table


def test_the_points_were_timed_in_one_process_beside_the_dense_model(frontier):
    results, _ = frontier
    (latency,) = (results / "bench").glob("latency-*.json")
    record = json.loads(latency.read_text())
    timed = {m.get("source", {}).get("key") for m in record["models"]}
    runs = {json.loads(p.read_text())["key"] for p in (results / "runs").glob("*.json")}
    assert runs <= timed
    (dense,) = [m for m in record["models"] if m["config"]["compressor"] == "full"]
    point = next(m for m in record["models"] if m["config"]["compressor"] != "full")
    for setting in ("backbone", "backbone_options", "dim", "max_len"):  # the same encoder
        assert dense["config"][setting] == point["config"][setting], setting
    # a column per runtime timed: each point's median and its ratio to the dense model's
    table = (results / "tables" / "frontier-synthetic.md").read_text().splitlines()
    columns = [c.strip() for c in next(r for r in table if r.startswith("| budget")).split("|")]
    names = {"eager": "eager", "onnx": "ONNX Runtime", "executorch": "ExecuTorch",
             "executorch-packed": "ExecuTorch, weights packed at load"}
    assert {"eager", "onnx"} <= set(dense["runtimes"])
    for runtime in dense["runtimes"]:
        column = columns.index(f"{names[runtime]} batch-1 ms (x dense)")
        dense_ms = dense["runtimes"][runtime]["batches"]["1"]["end_to_end"]["median_ms"]
        for model in record["models"]:
            key = model.get("source", {}).get("key")
            if model is dense or key not in runs:
                continue
            ms = model["runtimes"][runtime]["batches"]["1"]["end_to_end"]["median_ms"]
            row = next(r for r in table if r.endswith(f"| {key} |"))
            assert row.split("|")[column].strip() == f"{ms:.2f} ({ms / dense_ms:.2f}x)"


def test_a_point_timed_only_in_a_later_process_is_shown_against_that_process_dense(frontier):
    results, _ = frontier
    runs = [json.loads(p.read_text()) for p in (results / "runs").glob("*.json")]
    (latency,) = (results / "bench").glob("latency-*.json")
    first = json.loads(latency.read_text())
    late = runs[0]["key"]
    later = copy.deepcopy(first)
    later["date"] = "2100-01-01T00:00:00+00:00"
    later["models"] = [m for m in later["models"] if m["config"]["compressor"] == "full"
                       or m.get("source", {}).get("key") == late]
    for model in later["models"]:  # another process: every model twice as slow
        for timing in model["runtimes"].values():
            timing["batches"]["1"]["end_to_end"]["median_ms"] *= 2
    first["models"] = [m for m in first["models"] if m.get("source", {}).get("key") != late]
    table = frontier_table(runs, [], [first, later], "synthetic", 1).splitlines()
    (model,) = [m for m in later["models"] if m.get("source", {}).get("key") == late]
    (dense,) = [m for m in later["models"] if m["config"]["compressor"] == "full"]
    ms = model["runtimes"]["eager"]["batches"]["1"]["end_to_end"]["median_ms"]
    dense_ms = dense["runtimes"]["eager"]["batches"]["1"]["end_to_end"]["median_ms"]
    columns = [c.strip() for c in next(r for r in table if r.startswith("| budget")).split("|")]
    row = next(r for r in table if r.endswith(f"| {late} |")).split("|")
    assert row[columns.index("eager batch-1 ms (x dense)")].strip() == (
        f"{ms:.2f} ({ms / dense_ms:.2f}x) †")
    others = [r for r in table if "| budget" not in r and r.startswith("|")
              and any(r.endswith(f"| {x['key']} |") for x in runs if x["key"] != late)]
    assert others and not any("†" in r for r in others)
    (note,) = [line for line in table if line.startswith("† Timed in another process")]
    assert later["date"] in note


def test_the_session_knn_references_are_run_once_and_listed(frontier):
    results, _ = frontier
    knn = [json.loads(p.read_text()) for p in (results / "baselines").glob("synthetic-*.json")]
    assert sorted(k["method"] for k in knn) == ["sknn", "vsknn"]
    table = (results / "tables" / "frontier-synthetic.md").read_text()
    for k in knn:
        row = next(line for line in table.splitlines() if line.endswith(f"| {k['key']} |"))
        assert f"{k['test']['HR@10']:.2f}" in row


def test_the_figure_is_written_as_svg_and_pdf(frontier):
    results, _ = frontier
    svg = (results / "figures" / "frontier-synthetic.svg").read_text()
    text = "".join(ET.fromstring(svg).itertext())
    assert "hash" in text and "hash hashes=2" in text and "qr" in text
    assert (results / "figures" / "frontier-synthetic.pdf").read_bytes().startswith(b"%PDF")


def test_a_frontier_takes_the_epoch_cap_most_of_its_points_share():
    def run(data, epochs, ratio=10.0):
        return {"config": {"data": data, "epochs": epochs, "ratio": ratio, "distill": None},
                "selection": {"on": "validation"}}
    records = [run("a", 3), run("a", 3), run("a", 30), run("b", 5), run("c", 30, ratio=None)]
    knn = [{"dataset": {"name": "d"}}]
    assert frontier_views(records, knn) == [("a", 3), ("b", 5), ("d", 0)]


def test_impossible_options_are_refused(tmp_path):
    done = run_cli(["frontier", "--data", "synthetic", "--ratio", "0.5", "--render-only",
                    "--results", str(tmp_path)], cwd=tmp_path)
    assert done.returncode != 0 and "must exceed 1" in done.stderr
    done = run_cli(["frontier", "--data", "synthetic", "--compressor", "nope", "--render-only",
                    "--results", str(tmp_path)], cwd=tmp_path)
    assert done.returncode != 0 and "no budgeted compressor nope" in done.stderr
    done = run_cli(["frontier", "--data", "synthetic", "--compressor", "hash --hashse 2",
                    "--render-only", "--results", str(tmp_path)], cwd=tmp_path)
    assert done.returncode != 0 and "--hashes" in done.stderr  # a typo is an error, not a skip


def test_the_default_points_without_a_record_are_named(frontier):
    """The budgets of a dataset without its own (synthetic: 30x, also with the repeat-mixture
    head) for every budgeted compressor that reaches them, less what is recorded."""
    results, _ = frontier
    runs = [json.loads(p.read_text()) for p in (results / "runs").glob("*.json")]
    for record in runs:
        record["config"]["ratio"] = 30.0  # as if run at synthetic's default budget
    table = frontier_table(runs, [], [], "synthetic", 1)
    (line,) = [s for s in table.splitlines() if s.startswith("Not run yet")]
    named = set(line.split("): ", 1)[1].rstrip(".").split("; "))
    # on 2,001 items at dim 64, 30x is in reach of hash, prune, sttd and tt alone
    assert named == {"hash at 30x with the repeat-mixture head", "prune at 30x",
                     "prune at 30x with the repeat-mixture head", "sttd at 30x",
                     "sttd at 30x with the repeat-mixture head", "tt at 30x",
                     "tt at 30x with the repeat-mixture head"}


def test_the_model_free_rankings_come_from_any_record_of_the_same_data():
    """A teacher recorded before session recency was added still gets the recency row, taken
    from another record of the same split; a record of other data never lends its numbers."""
    from ecbench.bench.report.frontier import reference_rows

    def record(key, compressor, checksum, baselines, data="retailrocket"):
        return {"key": key, "finished": "2026-12-01", "seed": 0,
                "config": {"data": data, "backbone": "sasrec", "compressor": compressor,
                           "compressor_options": {}, "distill": None, "epochs": 30, "seed": 0},
                "dataset": {"name": data, "checksum": checksum},
                "selection": {"on": "validation"},
                "test": {"HR@10": 40.0, "NDCG@10": 28.0},
                "size": {"item_storage": {"total_bytes": 4096}},
                "baselines": baselines}

    popularity = {"popularity": {"HR@10": 1.5, "NDCG@10": 0.7}}
    recency = {"session recency": {"HR@10": 37.7, "NDCG@10": 28.8}}
    teacher = record("teacher", "full", "abc", popularity)
    point = record("point", "qr", "abc", {**popularity, **recency})
    other_version = record("other", "qr", "zzz", {**popularity,
                                                  "session recency": {"HR@10": 99.0, "NDCG@10": 9}})
    other_data = record("tm", "qr", "abc", {**popularity, **recency,
                                            "x": {"HR@10": 5, "NDCG@10": 5}}, data="tmall")
    rows = {row[0]: row for row in reference_rows(
        [teacher, other_version, other_data, point], [], "retailrocket")}
    assert rows["session recency (no table)"][1:3] == [37.7, 28.8]
    assert rows["session recency (no table)"][-1] == "point"
    assert rows["popularity (no table)"][1] == 1.5
    assert "x (no table)" not in rows
    assert rows["dense SASRec (at most 30 epochs; 1 seed(s))"][-1] == "teacher"
    # with both holding the same rankings the teacher's record is named
    teacher["baselines"] = {**popularity, **recency}
    rows = {row[0]: row for row in reference_rows([point, teacher], [], "retailrocket")}
    assert rows["session recency (no table)"][-1] == "teacher"


def test_teachers_of_different_epoch_caps_are_rows_of_their_own_not_seeds():
    from ecbench.bench.report.frontier import reference_rows

    def teacher(key, epochs, seed, hr):
        return {"key": key, "finished": "2026-12-01", "seed": seed,
                "config": {"data": "tmall", "backbone": "sasrec", "compressor": "full",
                           "compressor_options": {}, "distill": None, "epochs": epochs,
                           "seed": seed},
                "dataset": {"name": "tmall", "checksum": "abc"},
                "selection": {"on": "validation"}, "test": {"HR@10": hr, "NDCG@10": hr / 2},
                "size": {"item_storage": {"total_bytes": 2048}}, "baselines": {}}

    rows = {row[0]: row for row in reference_rows(
        [teacher("a", 30, 0, 26.0), teacher("b", 30, 1, 27.0), teacher("c", 3, 0, 20.0)],
        [], "tmall")}
    assert rows["dense SASRec (at most 30 epochs; 2 seed(s))"][1:3] == [26.5, 13.25]
    assert rows["dense SASRec (at most 30 epochs; 2 seed(s))"][-1] == "a, b"
    assert rows["dense SASRec (at most 3 epochs; 1 seed(s))"][1] == 20.0
