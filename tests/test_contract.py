"""Every registered compressor keeps the contract (CONTRIBUTING.md, "The compressor contract"):
row 0 is padding, lookups and scores agree with its whole table, gradients reach what it
learns, its deployed model saves and loads, and its exported artefacts give the eager model's
answers without a dense table inside. A compressor added to the registry without small options
here fails `test_every_compressor_has_small_options`, so none escapes these checks."""

from __future__ import annotations

import pytest
import torch

from ecbench import compressors
from ecbench.bench.deploy.export import example_inputs, export, holds_dense_table, load, missing_runtime
from ecbench.bench.deploy.recommender import DeployedRecommender, deployable_model
from ecbench.bench.training.config import RunConfig

NUM_ITEMS, DIM = 2001, 16
# a compressed shape of each at this size (full is the dense reference)
SMALL_OPTIONS = {
    "full": {}, "tt": {"rank": 4}, "sttd": {"rank": 8, "stp": 2}, "ccode": {"M": 3, "K": 16},
    "hash": {"buckets": 200}, "qr": {},
    "pq": {"groups": 4, "K": 16}, "quant": {"bits": 8}, "prune": {"density": 0.2},
    "mixed-dim": {}, "hybrid": {"exact_rows": 50, "M": 3, "K": 16},
}
# the built-ins (an installed third-party plugin is its own package's to test)
NAMES = sorted(n for n in compressors.registry.names()
               if compressors.registry.get(n).builder.__module__.startswith("ecbench.compressors."))


def test_every_compressor_has_small_options():
    assert set(NAMES) <= set(SMALL_OPTIONS), "add small options for the new compressor here"


def fresh(name: str, seed: int = 0) -> compressors.Compressor:
    """The compressor in its training form, arranged as a run would arrange it."""
    torch.manual_seed(seed)
    entry = compressors.registry.get(name)
    table = entry.builder(entry.config(**SMALL_OPTIONS[name]), num_items=NUM_ITEMS, dim=DIM)
    g = torch.Generator().manual_seed(seed)
    if table.uses_item_counts():
        counts = torch.randint(1, 500, (NUM_ITEMS,), generator=g)
        counts[0] = 0
        table.init_from_counts(counts)
    if table.uses_teacher():
        table.init_from_table(0.1 * torch.randn(NUM_ITEMS, DIM, generator=g))
    return table


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("deployed", [False, True])
def test_rows_scores_and_padding_agree_with_the_whole_table(name, deployed):
    table = fresh(name)
    if deployed:
        table.deploy()
    table.eval()
    with torch.no_grad():
        weight = table.weight()
        ids = torch.tensor([[0, 1, 7], [NUM_ITEMS - 1, 1000, 0]])
        query = torch.randn(5, DIM)
        assert weight.shape == (NUM_ITEMS, DIM)
        assert torch.all(weight[0] == 0)
        torch.testing.assert_close(table(ids), weight[ids], atol=1e-5, rtol=1e-5)
        expected = torch.stack([torch.stack([q.dot(row) for row in weight[:50]]) for q in query])
        torch.testing.assert_close(table.score(query)[:, :50], expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", NAMES)
def test_a_training_loss_reaches_every_learned_parameter(name):
    table = fresh(name)
    table.train()
    with table.shared_weight():
        scores = table.score(torch.randn(8, DIM)) + table(torch.randint(1, NUM_ITEMS, (8,))).sum()
        loss = torch.nn.functional.cross_entropy(scores, torch.randint(1, NUM_ITEMS, (8,)))
    extra = table.extra_loss()
    (loss + (extra if extra is not None else 0)).backward()
    for pname, param in table.named_parameters():
        if param.requires_grad:
            assert param.grad is not None and param.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name", NAMES)
def test_the_deployed_model_saves_and_loads_at_its_shape(name):
    config = RunConfig(compressor=name, compressor_options=SMALL_OPTIONS[name], dim=DIM, max_len=20,
                       backbone_options={"layers": 1, "heads": 2})
    model = deployable_model(config, NUM_ITEMS, None, seed=3)
    loaded = deployable_model(config, NUM_ITEMS, model.state_dict(), seed=4)
    item_seq, lengths = example_inputs(NUM_ITEMS, batch=3, length=6)
    with torch.no_grad():
        torch.testing.assert_close(loaded.score(item_seq, lengths), model.score(item_seq, lengths))
    report = model.compressor.storage()
    assert report.total_bytes > 0 and report.num_items == NUM_ITEMS
    if name != "full":
        assert report.byte_ratio > 1


def assert_same_top_k_up_to_ties(run, deployed, item_seq, lengths) -> None:
    """The exported top-K has the eager top-K's scores, and each item it names has that score
    in the eager model (tables that share rows tie, and runtimes order ties differently)."""
    with torch.no_grad():
        values, items = (torch.as_tensor(x) for x in run(item_seq, lengths))
        expected = deployed(item_seq, lengths)
        scores = deployed.all_scores(item_seq, lengths)
    torch.testing.assert_close(values, expected[0], atol=1e-4, rtol=0)
    torch.testing.assert_close(scores.gather(1, items.long()), expected[0], atol=1e-4, rtol=0)
    assert (items > 0).all()


# shapes exported beside each compressor's small options: a path of their own at deployment
ALSO_EXPORTED = [("quant", {"bits": 4})]


@pytest.mark.parametrize("fmt", ["onnx", "torchscript", "executorch", "executorch-packed"])
@pytest.mark.parametrize("name,options", [(n, SMALL_OPTIONS[n]) for n in NAMES] + ALSO_EXPORTED,
                         ids=lambda x: x if isinstance(x, str) else "-".join(map(str, x.values())))
def test_exported_artefact_answers_as_eager_without_a_dense_table(name, options, fmt, tmp_path):
    if missing_runtime(fmt):
        pytest.skip(missing_runtime(fmt))
    config = RunConfig(compressor=name, compressor_options=options, dim=DIM, max_len=20,
                       backbone_options={"layers": 1, "heads": 2})
    model = deployable_model(config, NUM_ITEMS, None, seed=1)
    path = export(DeployedRecommender(model, k=10, exportable=True), fmt, tmp_path / f"m.{fmt}",
                  max_batch=16)
    deployed = DeployedRecommender(model, k=10, exportable=True).eval()
    with torch.no_grad():  # the deployed form scores as the model
        item_seq, lengths = example_inputs(NUM_ITEMS, batch=3, length=6)
        torch.testing.assert_close(deployed.all_scores(item_seq, lengths),
                                   model.score(item_seq, lengths), atol=1e-4, rtol=0)
    # ExecuTorch's form may reach the runtime's own kernels (quant: a query rounded to int8)
    run = load(fmt, path)
    reference = deployed.for_executorch() if fmt.startswith("executorch") else deployed
    for batch, length in ((1, 4), (5, 12)):
        item_seq, lengths = example_inputs(NUM_ITEMS, batch=batch, length=length)
        assert_same_top_k_up_to_ties(run, reference, item_seq, lengths)
    if fmt != "executorch-packed":  # with XNNPACK's packed copies a file-size bound says little
        assert holds_dense_table(fmt, path, NUM_ITEMS, DIM) == (name == "full")
