"""Hot-path benchmarks on real Tmall (run once as smoke tests under --benchmark-disable)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ecbench.backbones import SASRec, SASRecConfig
from ecbench.bench.data.batching import Examples
from ecbench.bench.evaluation.metrics import pessimistic_ranks
from ecbench.bench.evaluation.topk import top_k
from ecbench.bench.training.train import training_loss
from ecbench.compressors.ccode import CCodeConfig, CompositionalCodeTable
from ecbench.compressors.full import FullTable


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


@pytest.mark.parametrize("repeat_head", [None, "bonus", "mixture"])
def test_bench_sasrec_training_step(benchmark, tmall, tmall_examples, repeat_head):
    """The teacher's step, plain and with each repeat head (their cost over the catalogue)."""
    torch.manual_seed(0)
    model = SASRec(FullTable(tmall.num_items, 128), SASRecConfig(dropout=0.5), max_len=50).train()
    if repeat_head is not None:
        model.enable_repeat(repeat_head, 50)
    losses = run_training_steps(benchmark, model, tmall_examples)
    assert losses and all(np.isfinite(losses))
    assert torch.count_nonzero(model.compressor.weight()[0]) == 0


def test_bench_ccode_code_learning_step(benchmark, tmall, tmall_examples):
    """The paper's Stu-base step at M=4, K=32: codes sampled for every item (Eq. 14-15), the
    table composed, mixed with the teacher's (Eq. 16) and pulled to it (Eq. 12): the work over
    the catalogue that makes it about three teacher steps."""
    torch.manual_seed(0)
    codes = CompositionalCodeTable(tmall.num_items, 128, CCodeConfig(M=4, K=32, eta=0.8))
    codes.init_from_table(torch.randn(tmall.num_items, 128) * 0.1)
    model = SASRec(codes, SASRecConfig(dropout=0.5), max_len=50).train()
    initial = codes.codes.clone()
    losses = run_training_steps(benchmark, model, tmall_examples)
    assert losses and all(np.isfinite(losses))
    assert not torch.equal(codes.codes, initial)  # every step draws new codes


def run_training_steps(benchmark, model, examples: Examples) -> list[float]:
    """Benchmark one Adam step of `model`'s training loss (its extra loss included) a call,
    cycling over three batches; returns every step's loss."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-5, fused=True)
    index = np.random.default_rng(0).permutation(len(examples))[:300]
    batches = [examples.batch(index[i:i + 100], 50) for i in range(0, 300, 100)]
    losses: list[float] = []

    def step():
        batch = batches[len(losses) % len(batches)]
        loss = training_loss(model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())

    benchmark(step)
    return losses


@pytest.fixture(scope="module")
def deployed_ccode(tmall) -> CompositionalCodeTable:
    """A deployed M=4, K=32 table over Tmall's items (random unique codes: timing only)."""
    table = CompositionalCodeTable(tmall.num_items, 128, CCodeConfig(M=4, K=32)).eval()
    g = torch.Generator().manual_seed(0)
    flat = torch.randperm(32 ** 4, generator=g)[:tmall.num_items]
    table.codes.copy_(torch.stack([(flat // 32 ** (3 - i)) % 32 for i in range(4)], 1))
    table.is_deployed.fill_(True)
    table.load_state_dict(table.state_dict())  # marks it deployed, as loading a saved model does
    return table


@pytest.mark.parametrize("batch", [1, 100])
def test_bench_ccode_lookup_scoring(benchmark, deployed_ccode, batch):
    query = torch.randn(batch, 128)
    with torch.no_grad():
        scores = benchmark(deployed_ccode.score, query)
        # Eq. 10 by plain indexing, independent of the lookup-table path
        table = deployed_ccode.codebooks[torch.arange(4), deployed_ccode.codes.long()].sum(1)
        table[0] = 0
    torch.testing.assert_close(scores, query @ table.T, atol=1e-4, rtol=0)


@pytest.mark.parametrize("batch", [1, 100])
def test_bench_dense_scoring(benchmark, tmall, batch):
    table, query = torch.randn(tmall.num_items, 128), torch.randn(batch, 128)
    scores = benchmark(torch.matmul, query, table.T)
    expected = (query.double()[:, None, :] * table.double()[None, :, :]).sum(-1)
    torch.testing.assert_close(scores.double(), expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("layout", ["rows", "columns"])
def test_bench_top_k(benchmark, tmall, layout):
    """Top-20 of 100 sessions over Tmall's items, in either layout scoring returns."""
    scores = torch.randn(100, tmall.num_items)
    if layout == "columns":
        scores = scores.t().contiguous().t()  # lookup-table scoring's [N, B] seen as [B, N]
    values, ids = benchmark(top_k, scores, 20, first=1)
    expected = scores[:, 1:].topk(20)
    assert torch.equal(values, expected.values) and torch.equal(ids, expected.indices + 1)


@pytest.fixture(scope="module")
def tmall_deployed(tmall):
    """The deployed SASRec at Tmall's shape with ccode (M=4, K=32) and with the full table."""
    from ecbench.bench.training.config import RunConfig
    from ecbench.bench.deploy.recommender import DeployedRecommender, deployable_model

    out = {}
    for name, options in (("ccode", {"M": 4, "K": 32}), ("full", {})):
        config = RunConfig(compressor=name, compressor_options=options, dim=128)
        model = deployable_model(config, tmall.num_items, None).eval()
        out[name] = (model, DeployedRecommender(model))
    return out


@pytest.mark.parametrize("batch", [1, 100])
@pytest.mark.parametrize("compressor", ["ccode", "full"])
def test_bench_deployed_end_to_end(benchmark, tmall, tmall_deployed, compressor, batch):
    from ecbench.bench.deploy.latency import timing_batches

    item_seq, lengths = timing_batches(tmall, batch, 1, 50)[0]
    model, deployed = tmall_deployed[compressor]
    with torch.no_grad():
        values, items = benchmark(deployed, item_seq, lengths)
        # the training model's own dense scores, ranked by torch.topk, padding excluded
        scores = model.score(item_seq, lengths)[:, 1:]
    expected = scores.topk(20)
    torch.testing.assert_close(values, expected.values, atol=1e-4, rtol=0)
    assert (items > 0).all() and (items - 1 == expected.indices).float().mean() > 0.99


BUDGET = 30.0  # each compressor at the paper's ratio, or as close as its family reaches


def budgeted_table(name: str, num_items: int, dim: int = 128):
    """A built-in compressor sized to `BUDGET` (its largest reachable ratio below it
    otherwise), deployed with arbitrary values of its structure: timing only."""
    from ecbench import compressors

    entry = compressors.registry.get(name)
    for ratio in (BUDGET, 10.0, 4.0, 2.0):
        try:
            config = entry.budget(entry.default_config(), num_items, dim, ratio)
            break
        except ValueError:
            continue
    torch.manual_seed(0)
    table = entry.builder(config, num_items=num_items, dim=dim).eval()
    table.deploy_untrained(0)
    return table


@pytest.mark.parametrize("name", ["hash", "qr", "pq", "quant", "prune", "mixed-dim", "hybrid",
                                  "sttd", "tt"])
def test_bench_deployed_scoring_of_each_compressor(benchmark, tmall, name):
    """One session scored over Tmall's items by each compressor's deployed form (what a phone
    runs), against the dense product of the table it stands for."""
    table = budgeted_table(name, tmall.num_items)
    form = table.inference_form(exportable=False).eval()
    query = torch.randn(1, 128, generator=torch.Generator().manual_seed(1))

    def score():
        with form.call():
            return form.score(query)

    with torch.no_grad():
        scores = benchmark(score)
        weight = table.weight().double()
    torch.testing.assert_close(scores.double(), query.double() @ weight.T, atol=1e-3, rtol=1e-4)


def test_bench_session_knn_scoring(benchmark, tmall):
    """256 Tmall test sessions scored by SKNN at once; a session's scores do not depend on the
    others in its batch."""
    from ecbench.bench.evaluation.session_knn import KNNConfig, SessionKNN

    knn = SessionKNN(tmall.train, tmall.num_items, KNNConfig(method="sknn"))
    prefixes = tmall.test_prefixes.select(np.arange(256))
    scores = benchmark(knn.scores, prefixes)
    for i in (0, 100, 255):
        alone = knn.scores(tmall.test_prefixes.select(np.array([i])))
        np.testing.assert_allclose(scores[i], alone[0], rtol=1e-12)


def test_bench_raw_log_preprocessing(benchmark, tmall):
    """SR-GNN's preprocessing over a click log of Tmall's size (its training sessions, one a
    minute over 45 days, clicks a second apart, in shuffled file order)."""
    from ecbench.bench.data.raw import ClickLog, preprocess

    sessions = tmall.train
    session_of = np.repeat(np.arange(len(sessions)), sessions.lengths)
    position = np.arange(len(sessions.items)) - sessions.offsets[session_of]
    times = 60.0 * session_of + position
    shuffled = np.random.default_rng(0).permutation(len(times))
    log = ClickLog(session_of[shuffled], sessions.items[shuffled], times[shuffled],
                   times[shuffled])
    prepared = benchmark(preprocess, log, test_days=7)
    assert len(prepared.train) > 0.5 * len(sessions) and len(prepared.test_labels) > 0
    assert prepared.train.items.min() == 1
    assert prepared.train.items.max() == prepared.num_items - 1
