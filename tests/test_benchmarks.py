"""Hot-path benchmarks on real Tmall (run once as smoke tests under --benchmark-disable)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from backbones import SASRec, SASRecConfig
from bench.batching import Examples
from bench.metrics import pessimistic_ranks
from compressors.full import FullTable


@pytest.fixture(scope="module")
def tmall_examples(tmall) -> Examples:
    return Examples.from_sessions(tmall.train)


def test_bench_batch_building(benchmark, tmall_examples):
    index = np.random.default_rng(0).permutation(len(tmall_examples))[:100]
    batch = benchmark(tmall_examples.batch, index, 50)
    assert batch.items.shape[0] == 100 and batch.items.shape[1] <= 50
    assert torch.equal(batch.targets, torch.from_numpy(tmall_examples.targets[index]))


def test_bench_pessimistic_ranks(benchmark, tmall):
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(500, tmall.num_items, generator=g)
    targets = torch.randint(1, tmall.num_items, (500,), generator=g)
    ranks = benchmark(pessimistic_ranks, scores, targets)
    assert ranks.shape == (500,)
    assert int(ranks.min()) >= 1 and int(ranks.max()) <= tmall.num_items - 1


def test_bench_sasrec_training_step(benchmark, tmall, tmall_examples):
    torch.manual_seed(0)
    model = SASRec(FullTable(tmall.num_items, 128), SASRecConfig(dropout=0.5), max_len=50).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-5, fused=True)
    index = np.random.default_rng(0).permutation(len(tmall_examples))[:300]
    batches = [tmall_examples.batch(index[i:i + 100], 50) for i in range(0, 300, 100)]
    losses = []

    def step():
        batch = batches[len(losses) % len(batches)]
        loss = F.cross_entropy(model.score(batch.items, batch.lengths)[:, 1:], batch.targets - 1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())

    benchmark(step)
    assert losses and all(np.isfinite(losses))
    assert torch.count_nonzero(model.compressor.weight()[0]) == 0
