"""The latency harness writes a record; Table 5 is rendered from such records alone."""

from __future__ import annotations

import json

import pytest
import torch

from ecbench.bench.training.config import RunConfig
from ecbench.bench.deploy.recommender import deployable_model
from ecbench.bench.deploy.latency import Candidate, benchmark_latency
from ecbench.bench.report.tables import latency_cells, table5
from helpers import run_cli

OPTIONS = {"full": {}, "sttd": {"rank": 8, "stp": 2}, "ccode": {"M": 3, "K": 16}}


@pytest.fixture(scope="module")
def latency_record(tiny_synthetic, tmp_path_factory):
    results = tmp_path_factory.mktemp("results")
    candidates = [Candidate(c, deployable_model(c, tiny_synthetic.num_items, None)) for c in (
        RunConfig(compressor=name, compressor_options=options, dim=16, max_len=20)
        for name, options in OPTIONS.items())]
    result, path = benchmark_latency(
        candidates, tiny_synthetic, runtimes=["torchscript"], batches=(1, 8), repeats=3,
        warmup=1, sessions=16, results_dir=results, artefact_dir=results / "artefacts",
        log=lambda _: None)
    return result, path


def test_latency_record_is_written_with_every_model_runtime_and_batch(latency_record):
    result, path = latency_record
    assert json.loads(path.read_text()) == result
    assert path.parent.name == "bench" and path.name.startswith("latency-")
    assert [m["config"]["compressor"] for m in result["models"]] == list(OPTIONS)
    for model in result["models"]:
        eager = model["runtimes"]["eager"]["batches"]
        assert set(eager) == {"1", "8"}
        assert set(eager["1"]["stages"]) == {"items", "encode", "score", "top_k"}
        assert not model["source"]["trained"]
        script = model["runtimes"]["torchscript"]
        assert script["artefact"]["bytes"] > 0
        assert all(a["top20_identical"] and a["max_abs_score_difference"] < 1e-4
                   for a in script["agreement_with_eager"].values())
    assert result["provenance"]["machine"]["torch_threads"] == 1


def test_table5_renders_ours_beside_the_papers(latency_record):
    result, _ = latency_record
    text = table5([result], runtime="eager", batch=8)
    assert "New Student" in text and "OD-Rec" in text and "SASRec (teacher)" in text
    assert "21.00" in text and "169.00" in text  # the paper's Tmall seconds, in ms
    assert f"{result['dataset']['name']} ours" in text


def test_table5_keeps_to_its_own_models_beside_a_larger_frontier_record(latency_record):
    """A frontier's latency record, later and with more models but fewer of the paper's, does
    not replace the record of Table 5's models (ratios hold only within one process)."""
    import copy

    result, _ = latency_record
    student = next(m for m in result["models"] if m["config"]["compressor"] == "ccode")
    frontier = {**copy.deepcopy(result), "date": "9999-01-01T00:00:00+00:00", "models": []}
    for name in ("ccode", "hash", "qr", "pq", "prune", "mixed-dim"):
        model = copy.deepcopy(student)
        model["config"]["compressor"] = name
        model["runtimes"]["eager"]["batches"]["8"]["end_to_end"]["median_ms"] = 1e6
        frontier["models"].append(model)
    text = table5([result, frontier], runtime="eager", batch=8)
    assert "12500000.00" not in text and "sasrec+hash" not in text  # 1e6 ms x 100 / 8
    assert "New Student" in text and "OD-Rec" in text


def test_table5_prefers_the_record_of_trained_models_to_a_later_untrained_one(latency_record):
    """Table 5 is of trained models: a record that timed them wins over one of untrained
    models of their shape, even a later one."""
    import copy

    result, _ = latency_record
    trained = copy.deepcopy(result)
    for model in trained["models"]:
        model["source"]["trained"] = True
        model["runtimes"]["eager"]["batches"]["8"]["end_to_end"]["median_ms"] = 4.0
    later_untrained = {**copy.deepcopy(result), "date": "9999-01-01T00:00:00+00:00"}
    cells = latency_cells([trained, later_untrained], "eager", 8)
    assert {c.ms for c in cells.values()} == {4.0} and all(c.trained for c in cells.values())
    assert "untrained" not in table5([later_untrained, trained], runtime="eager",
                                     batch=8).split("\n\n", 1)[1]


def test_a_record_of_other_models_makes_no_table5(latency_record):
    """A record timing a compressor of ours (quant) beside the teacher, or beside the paper's
    models, in a runtime no other record has, is no Table 5: no table for that runtime, no cell
    from it."""
    import copy

    from ecbench.bench.report.all_tables import latency_variants

    result, _ = latency_record
    teacher = next(m for m in result["models"] if m["config"]["compressor"] == "full")
    ours = copy.deepcopy(teacher)
    ours["config"]["compressor"] = "quant"
    others = {**copy.deepcopy(result), "models": [copy.deepcopy(teacher), ours]}
    for model in others["models"]:
        model["runtimes"]["executorch"] = model["runtimes"]["eager"]
    assert ("executorch", 8, "warm") not in latency_variants([result, others])
    assert "sasrec+quant" not in table5([result, others], runtime="executorch", batch=8)
    assert ("torchscript", 8, "warm") in latency_variants([result, others])
    # nor is a frontier's record, though it timed a ccode point of its own budget
    frontier = {**copy.deepcopy(others), "models": [copy.deepcopy(m) for m in result["models"]]
                + [ours]}
    assert ("executorch", 8, "warm") not in latency_variants([result, frontier])


def test_table5_command_reads_the_records(latency_record, tmp_path):
    _, path = latency_record
    done = run_cli(["table", "5", "--results", str(path.parent.parent), "--batch", "1"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert "New Student" in done.stdout and "ms per 100 sessions" in done.stdout


def test_models_take_turns_in_blocks_on_the_same_inputs():
    from ecbench.bench.deploy.latency import round_robin

    calls = []

    def measure(name):
        def run(x):
            calls.append((name, x))
            return (float(x), 2.0 * x) if name == "a" else (float(x),)
        return run

    a, b = round_robin([measure("a"), measure("b")], inputs=[1, 2, 3], repeats=4, warmup=2,
                       block=3)
    # warm-up calls each, then blocks: one untimed call, then the block's timed calls
    assert calls == [("a", 1), ("a", 2), ("b", 1), ("b", 2),
                     ("a", 1), ("a", 1), ("a", 2), ("a", 3), ("b", 1), ("b", 1), ("b", 2),
                     ("b", 3), ("a", 1), ("a", 1), ("b", 1), ("b", 1)]
    assert a.shape == (4, 2) and b.shape == (4, 1)
    assert a[:, 0].tolist() == [1.0, 2.0, 3.0, 1.0] and a[:, 1].tolist() == [2.0, 4.0, 6.0, 2.0]


def test_cold_caches_are_emptied_before_every_timed_call(tiny_synthetic, tmp_path, monkeypatch):
    from ecbench.bench.deploy import latency

    evictions = []
    monkeypatch.setattr(latency, "cache_evictor", lambda nbytes: lambda: evictions.append(nbytes))
    config = RunConfig(compressor="ccode", compressor_options={"M": 2, "K": 8}, dim=16,
                       max_len=20)
    candidate = Candidate(config, deployable_model(config, tiny_synthetic.num_items, None))
    result, path = benchmark_latency([candidate], tiny_synthetic, runtimes=[], batches=(1,),
                                     repeats=4, warmup=1, sessions=8, results_dir=tmp_path,
                                     cache="cold", log=lambda _: None)
    # one model, eager: its stages and its end to end, 4 timed calls each
    assert len(evictions) == 8 and evictions[0] >= 64 * 2**20
    assert result["protocol"]["cache"] == "cold" and path.name.endswith("-t1-cold.json")
    # Table 5 keeps warm and cold records apart
    data = result["dataset"]["name"]
    assert set(latency_cells([result], "eager", 1, cache="cold")) == {("New Student", data)}
    assert not latency_cells([result], "eager", 1, cache="warm")


def test_the_evictor_streams_a_buffer_of_the_given_size():
    from ecbench.bench.deploy.latency import cache_evictor, last_level_cache_bytes

    evict = cache_evictor(8 * 2**20)
    evict()  # runs; the buffer is what it touches
    assert evict.__closure__[0].cell_contents.nbytes == 8 * 2**20
    llc = last_level_cache_bytes()
    assert llc is None or llc >= 2**10


def test_a_latency_spec_may_name_its_backbone():
    from ecbench.bench.cli.bench_commands import _spec_backbone
    from ecbench.bench.errors import ConfigError

    assert _spec_backbone(["--M", "4"], "sasrec") == ("sasrec", ["--M", "4"])
    assert _spec_backbone(["--backbone", "narm", "--M", "4"], "sasrec") == ("narm", ["--M", "4"])
    with pytest.raises(ConfigError, match="needs a name"):
        _spec_backbone(["--backbone"], "sasrec")


def test_a_latency_spec_may_add_a_repeat_head(tmp_path):
    from ecbench.bench.cli.bench_commands import _spec_heads

    assert _spec_heads(["--M", "4", "--repeat-mixture"]) == ({"repeat_mixture": True},
                                                              ["--M", "4"])
    assert _spec_heads(["--rank", "8"]) == ({}, ["--rank", "8"])
    done = run_cli(["bench", "latency", "--data", "synthetic", "--dim", "16", "--compressor",
                    "ccode --M 3 --K 16 --repeat-mixture", "--runtime", "torchscript",
                    "--batch", "1", "--repeats", "2", "--warmup", "1", "--sessions", "4",
                    "--results", str(tmp_path), "--workdir", str(tmp_path / "work")], tmp_path)
    assert done.returncode == 0, done.stderr
    record = json.loads(next((tmp_path / "bench").glob("latency-*-repeat-mixture-t1.json"))
                        .read_text())
    assert [m["label"] for m in record["models"]] == ["sasrec-full",
                                                      "sasrec-ccode-K16-M3-eta0.8-repeat-mixture"]


def test_a_repeat_head_is_timed_as_its_own_model(tiny_synthetic, tmp_path):
    """The same compressor with and without a repeat head: two labels, two artefacts, each
    compared with the full table of its own head; the record is named by the heads it timed, so
    it never overwrites the plain models' record, and Table 5 keeps the head apart."""
    configs = [RunConfig(compressor=name, compressor_options=OPTIONS[name], dim=16, max_len=20,
                         repeat_mixture=head) for head in (None, True) for name in ("full", "ccode")]
    candidates = [Candidate(c, deployable_model(c, tiny_synthetic.num_items, None))
                  for c in configs]
    result, path = benchmark_latency(
        candidates, tiny_synthetic, runtimes=["torchscript"], batches=(1,), repeats=2, warmup=1,
        sessions=8, results_dir=tmp_path, artefact_dir=tmp_path / "artefacts",
        log=lambda _: None)
    labels = [m["label"] for m in result["models"]]
    assert labels == ["sasrec-full", "sasrec-ccode-K16-M3", "sasrec-full-repeat-mixture",
                      "sasrec-ccode-K16-M3-repeat-mixture"]
    artefacts = {m["runtimes"]["torchscript"]["artefact"]["path"] for m in result["models"]}
    assert len(artefacts) == 4
    assert path.name.endswith("-repeat-mixture-t1.json")
    plain_full = result["models"][0]["runtimes"]["eager"]["batches"]["1"]
    mixture_full = result["models"][2]["runtimes"]["eager"]["batches"]["1"]
    mixture_ccode = result["models"][3]["runtimes"]["eager"]["batches"]["1"]
    # the head's ccode is compared with the full table with the same head, not the plain one
    assert mixture_ccode["ratio_to_full"] * mixture_full["end_to_end"]["median_ms"] == \
        pytest.approx(mixture_ccode["end_to_end"]["median_ms"])
    assert mixture_full["end_to_end"]["median_ms"] != plain_full["end_to_end"]["median_ms"]
    text = table5([result], batch=1)
    assert "New Student + repeat mixture" in text and "SASRec (teacher) + repeat mixture" in text
    rows = [line.split("|")[1].strip() for line in text.splitlines() if line.startswith("| ")]
    assert {"New Student", "New Student + repeat mixture"} <= set(rows)


def test_two_models_of_one_shape_get_distinct_labels():
    """A Stu-base and its distilled student share compressor, options and head: their labels,
    which name their artefacts, take the record key (or the place in the list) apart."""
    from ecbench.bench.deploy.latency import tag_alike

    config = RunConfig(compressor="ccode", compressor_options=OPTIONS["ccode"], dim=16)
    base, student, fresh, other = (
        Candidate(config, None, {"trained": True, "key": "aaaa"}),
        Candidate(config, None, {"trained": True, "key": "bbbb"}),
        Candidate(config, None),
        Candidate(RunConfig(dim=16), None))
    tag_alike([base, student, fresh, other])
    assert [base.label, student.label, fresh.label, other.label] == [
        "sasrec-ccode-K16-M3-aaaa", "sasrec-ccode-K16-M3-bbbb", "sasrec-ccode-K16-M3-2",
        "sasrec-full"]


def test_timing_leaves_the_callers_threads_and_subnormals_as_it_found_them(tiny_synthetic,
                                                                           tmp_path):
    """Timing flushes denormals and sets its own thread count; a caller's process must get its
    IEEE arithmetic back (numpy's smallest subnormal stays nonzero) and its thread count."""
    import numpy as np

    smallest_subnormal = np.nextafter(np.float64(0), np.float64(1))
    assert smallest_subnormal * 1.0 > 0  # the arithmetic before: subnormals kept
    threads = torch.get_num_threads()
    config = RunConfig(dim=16, max_len=20)
    candidate = Candidate(config, deployable_model(config, tiny_synthetic.num_items, None))
    benchmark_latency([candidate], tiny_synthetic, runtimes=[], batches=(1,), repeats=2,
                      warmup=1, sessions=4, results_dir=tmp_path, threads=threads + 1)
    assert smallest_subnormal * 1.0 > 0
    assert np.float64(2.2250738585072014e-308) / 2 > 0
    assert torch.get_num_threads() == threads
