"""Session-kNN against a plain-Python reading of Ludewig and Jannach's SKNN and V-SKNN, its
stored bytes, and its run record."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest

from ecbench.bench.data.sessions import Sessions
from ecbench.bench.evaluation.session_knn import KNNConfig, SessionKNN
from helpers import run_cli


def reference_scores(past: list[list[int]], session: list[int], num_items: int, method: str,
                     k: int, sample: int) -> list[float]:
    """One session's item scores, the way the papers describe them, one loop at a time."""
    items = set(session)
    if method == "vsknn":  # the item at position p of L weighs p / L; its latest click counts
        position = {item: p + 1 for p, item in enumerate(session)}
    candidates = [i for i in range(len(past)) if items & set(past[i])]
    candidates = sorted(candidates, reverse=True)[:sample]  # the most recent
    similarity = {}
    for i in candidates:
        other = set(past[i])
        if method == "sknn":
            similarity[i] = len(items & other) / math.sqrt(len(items) * len(other))
        else:
            similarity[i] = sum(position[x] for x in items & other) / (len(session) * len(items))
    neighbours = sorted(candidates, key=lambda i: (-similarity[i], -i))[:k]
    scores = [0.0] * num_items
    for i in neighbours:
        for item in set(past[i]):
            scores[item] += similarity[i]
    scores[0] = 0.0
    return scores


def random_sessions(rng: random.Random, count: int, num_items: int) -> list[list[int]]:
    return [[rng.randrange(1, num_items) for _ in range(rng.randint(1, 7))] for _ in range(count)]


@pytest.mark.parametrize("method", ["sknn", "vsknn"])
@pytest.mark.parametrize("k,sample", [(3, 10), (5, 500), (1, 1)])
def test_scores_match_the_plain_python_reading(method, k, sample):
    rng = random.Random(7)
    num_items = 30
    past = random_sessions(rng, 120, num_items)
    queries = random_sessions(rng, 25, num_items) + [[4, 4, 9, 4]]  # repeats too
    knn = SessionKNN(Sessions.from_lists(past), num_items, KNNConfig(method, k=k, sample=sample))
    got = knn.scores(Sessions.from_lists(queries))
    expected = np.array([reference_scores(past, q, num_items, method, k, sample) for q in queries])
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_a_session_sharing_nothing_scores_nothing():
    knn = SessionKNN(Sessions.from_lists([[1, 2], [2, 3]]), 6, KNNConfig("sknn", k=1, sample=1))
    assert not knn.scores(Sessions.from_lists([[5]])).any()


def test_stored_bytes_are_both_indices_in_their_smallest_types():
    past = [[1, 2, 2, 3], [3, 4], [300, 1]]
    knn = SessionKNN(Sessions.from_lists(past), 301, KNNConfig())
    stored = {t.name: (t.shape, t.dtype, t.nbytes) for t in knn.stored()}
    distinct = 3 + 2 + 2  # items once per session
    assert stored["session_items"] == ((distinct,), "uint16", 2 * distinct)  # ids up to 300
    assert stored["item_sessions"] == ((distinct,), "uint8", distinct)  # 3 sessions
    assert stored["session_offsets"] == ((4,), "uint8", 4)
    assert stored["item_offsets"] == ((302,), "uint8", 302)


def test_bad_options_are_refused():
    for bad in ({"method": "knn"}, {"k": 0}, {"k": 10, "sample": 5}):
        with pytest.raises(ValueError):
            KNNConfig(**bad)


def test_the_command_writes_a_record_with_metrics_bytes_and_latency(tmp_path):
    done = run_cli(["knn", "--data", "synthetic", "--method", "sknn", "--latency-repeats", "20",
                    "--results", str(tmp_path)], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "stores" in done.stdout and "record:" in done.stdout
    (path,) = (tmp_path / "baselines").glob("synthetic-sknn-*.json")
    record = json.loads(path.read_text())
    assert 0 < record["test"]["HR@10"] <= record["test"]["HR@20"] <= 100
    assert record["storage"]["total_bytes"] == sum(t["bytes"] for t in record["storage"]["tensors"])
    # against the dense table of the dataset's own preset width (synthetic: 64)
    assert record["storage"]["full_dim"] == 64
    assert record["storage"]["full_bytes"] == record["dataset"]["num_items"] * 64 * 4
    assert record["timing"]["batch1"]["repeats"] == 20
    assert record["provenance"]["command"].startswith("ecbench knn")
