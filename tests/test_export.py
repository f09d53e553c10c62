"""The deployed model and its exported artefacts: same answers as eager, compressed form kept."""

from __future__ import annotations

import pytest
import torch

from ecbench.bench.training.config import RunConfig
from ecbench.bench.deploy.recommender import DeployedRecommender, deployable_model
from ecbench.bench.deploy.export import (FORMATS, artefact_tensors, example_inputs, export,
                                         holds_dense_table, load, lowered_to_xnnpack,
                                         missing_runtime)
from helpers import assert_same_top_k

NUM_ITEMS, DIM = 2001, 16
OPTIONS = {"full": {}, "tt": {"rank": 4}, "sttd": {"rank": 8, "stp": 2},
           "ccode": {"M": 3, "K": 16}}
# what does not lower to a format (every compressor and backbone lowers to each)
UNSUPPORTED: dict[tuple[str, str], str] = {}


def build(compressor: str):
    config = RunConfig(compressor=compressor, compressor_options=OPTIONS[compressor], dim=DIM,
                       max_len=20, backbone_options={"layers": 1, "heads": 2})
    return deployable_model(config, NUM_ITEMS, None)


@pytest.fixture(scope="module", params=list(OPTIONS))
def model(request):
    return build(request.param)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """`exported(compressor, fmt)`: the artefact's path, exported once per module."""
    folder, cache = tmp_path_factory.mktemp("artefacts"), {}

    def get(compressor: str, fmt: str):
        if missing_runtime(fmt):
            pytest.skip(missing_runtime(fmt))
        if (fmt, compressor) in UNSUPPORTED:
            pytest.skip(UNSUPPORTED[fmt, compressor])
        if (compressor, fmt) not in cache:
            deployed = DeployedRecommender(build(compressor), k=10, exportable=True)
            cache[compressor, fmt] = export(deployed, fmt, folder / f"{compressor}.{fmt}",
                                            max_batch=16)
        return cache[compressor, fmt]
    return get


def sessions(batch: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    return example_inputs(NUM_ITEMS, batch=batch, length=length)


@pytest.mark.parametrize("batch", [1, 7])
@pytest.mark.parametrize("exportable", [False, True])
def test_deployed_top_k_is_the_models_own_ranking(model, batch, exportable):
    deployed = DeployedRecommender(model, k=10, exportable=exportable)
    item_seq, lengths = sessions(batch, 9)
    with torch.no_grad():
        values, items = deployed(item_seq, lengths)
        expected = model.score(item_seq, lengths)[:, 1:].topk(10)
    torch.testing.assert_close(values, expected.values, atol=1e-5, rtol=0)
    assert torch.equal(items, expected.indices + 1)
    assert (items > 0).all()  # padding is never recommended


def test_ccode_inference_form_stores_codes_and_codebooks_only(model):
    if model.compressor.__class__.__name__ != "CompositionalCodeTable":
        pytest.skip("ccode only")
    form = model.compressor.inference_form(exportable=True)
    stored = {name: (tuple(t.shape), t.dtype) for name, t in form.state_dict().items()}
    assert stored["codes"] == ((3, NUM_ITEMS), torch.uint8)  # codebook-major, as scoring reads it
    assert stored["codebooks"] == ((3, 16, DIM), torch.float32)
    assert all(NUM_ITEMS * DIM > torch.Size(shape).numel() for shape, _ in stored.values())


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("compressor", list(OPTIONS))
def test_export_round_trip_equals_eager(compressor, fmt, exported):
    path = exported(compressor, fmt)
    run = load(fmt, path)
    deployed = DeployedRecommender(build(compressor), k=10, exportable=True)
    for batch, length in ((1, 4), (5, 12)):  # shapes other than the traced ones
        item_seq, lengths = sessions(batch, length)
        assert_same_top_k(run, deployed, item_seq, lengths)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("backbone", ["gru4rec", "narm", "stamp", "srgnn"])
def test_every_baseline_exports_and_equals_eager(backbone, fmt, tmp_path):
    """The baselines export too: the GRUs (packed sequences in eager) over a fixed width, the
    session graphs with sizes an export keeps dynamic; checked at shapes other than the
    traced one, with repeated items (SR-GNN's graphs) and a session of one item."""
    if missing_runtime(fmt):
        pytest.skip(missing_runtime(fmt))
    if (fmt, backbone) in UNSUPPORTED:
        pytest.skip(UNSUPPORTED[fmt, backbone])
    config = RunConfig(compressor="full", dim=DIM, max_len=20, backbone=backbone)
    assert_exported_answers_as_eager(deployable_model(config, NUM_ITEMS, None), fmt,
                                     tmp_path / f"{backbone}.{fmt}")


def assert_exported_answers_as_eager(model, fmt: str, path) -> None:
    """`model` exported to `fmt` gives eager's top-K at shapes other than the traced one, with
    a repeated item and a session of one item."""
    path = export(DeployedRecommender(model, k=10, exportable=True), fmt, path, max_batch=16)
    run, deployed = load(fmt, path), DeployedRecommender(model, k=10).eval()
    for batch, length in ((1, 4), (6, 12)):
        item_seq, lengths = sessions(batch, length)
        item_seq[0, 1:3] = item_seq[0, 0]  # a repeated item
        if batch > 1:  # and a session of one item
            item_seq[-1, 1:], lengths[-1] = 0, 1
        assert_same_top_k(run, deployed, item_seq, lengths)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("head", ["repeat_bonus", "repeat_mixture"])
def test_a_repeat_head_exports_and_equals_eager(head, fmt, tmp_path):
    """The repeat heads score the session's own items apart; exported they answer as eager
    (ExecuTorch: every reshape inside XNNPACK of one dynamic dimension at most)."""
    if missing_runtime(fmt):
        pytest.skip(missing_runtime(fmt))
    config = RunConfig(compressor="full", dim=DIM, max_len=20, **{head: True})
    model = deployable_model(config, NUM_ITEMS, None)
    with torch.no_grad():  # a head that matters: its weights away from their zero start
        model.repeat.recency.copy_(torch.linspace(2.0, 0.0, model.repeat.recency.numel()))
        model.repeat.gate.bias.fill_(0.5)
    assert_exported_answers_as_eager(model, fmt, tmp_path / f"{head}.{fmt}")


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_exported_ccode_holds_no_dense_table_but_full_does(fmt, exported):
    ccode, full = exported("ccode", fmt), exported("full", fmt)
    assert holds_dense_table(fmt, full, NUM_ITEMS, DIM)  # the check sees a table when there is one
    assert not holds_dense_table(fmt, ccode, NUM_ITEMS, DIM)
    dense = NUM_ITEMS * DIM * 4
    assert all(a.nbytes < dense for a in artefact_tensors(fmt, ccode))

    def stored(path):  # tensor bytes where the format itemises them, else the file's size
        arrays = [a for a in artefact_tensors(fmt, path) if not a.name.startswith("runtime:")]
        return sum(a.nbytes for a in arrays) if arrays else path.stat().st_size

    assert stored(full) - stored(ccode) > 0.5 * dense


def test_onnx_runtime_graph_of_sttd_is_not_folded_into_a_table(exported):
    """ONNX Runtime runs the cores, not a dense constant rebuilt from them at load time."""
    arrays = artefact_tensors("onnx", exported("sttd", "onnx"))
    assert any(a.name.startswith("runtime:") for a in arrays)
    assert not any(a.shape == (NUM_ITEMS, DIM) or a.nbytes >= NUM_ITEMS * DIM * 4
                   for a in arrays)


@pytest.mark.parametrize("backbone", ["gru4rec", "narm", "stamp", "srgnn", "sasrec"])
@pytest.mark.parametrize("compressor", ["full", "ccode"])
def test_every_backbone_runs_deployed(backbone, compressor):
    config = RunConfig(compressor=compressor, compressor_options=OPTIONS[compressor], dim=DIM,
                       max_len=20, backbone=backbone)
    model = deployable_model(config, NUM_ITEMS, None)
    deployed = DeployedRecommender(model, k=10).eval()
    items, lengths = sessions(4, 7)
    with torch.no_grad():
        values, ids = deployed(items, lengths)
        expected = model.score(items, lengths)[:, 1:].topk(10)
    torch.testing.assert_close(values, expected.values, atol=1e-4, rtol=1e-4)


def test_an_artefact_for_batch_one_alone_exports_and_answers(tmp_path):
    """Latency at batch 1 alone exports with max_batch=1 (a dynamic batch needs max > min)."""
    if missing_runtime("onnx"):
        pytest.skip(missing_runtime("onnx"))
    deployed = DeployedRecommender(build("full"), k=10, exportable=True)
    path = export(deployed, "onnx", tmp_path / "b1.onnx", max_batch=1)
    item_seq, lengths = sessions(1, 6)
    assert_same_top_k(load("onnx", path), deployed, item_seq, lengths)


@pytest.mark.parametrize("compressor", ["full", "tt"])
def test_executorch_scores_every_item_inside_xnnpack(compressor):
    """The product of the session vectors with every item's row, stored (full) or rebuilt in
    the call (tt), is lowered to XNNPACK: none is left to the portable kernels, which ran the
    dense model's scoring five times slower at Tmall's shape."""
    if missing_runtime("executorch"):
        pytest.skip(missing_runtime("executorch"))
    deployed = DeployedRecommender(build(compressor), k=10, exportable=True).eval()
    with torch.no_grad():
        lowered = lowered_to_xnnpack(deployed, example_inputs(NUM_ITEMS), max_batch=16)
    products = ("aten.mm.", "aten.addmm.", "aten.linear.", "aten.bmm.")
    left_out = [str(n.target) for n in lowered.exported_program().graph.nodes
                if n.op == "call_function" and any(p in str(n.target) for p in products)
                and NUM_ITEMS in tuple(n.meta["val"].shape)]
    assert not left_out


def test_executorch_runs_every_matrix_product_of_sasrec_inside_xnnpack():
    """The backbone's layers too: XNNPACK refuses a tensor whose size depends on the data
    (the count of real tokens), so the ExecuTorch form takes every position as a token; the
    layers were three quarters of the dense model's ExecuTorch call in portable kernels."""
    if missing_runtime("executorch"):
        pytest.skip(missing_runtime("executorch"))
    deployed = DeployedRecommender(build("full"), k=10, exportable=True).eval()
    with torch.no_grad():
        lowered = lowered_to_xnnpack(deployed, example_inputs(NUM_ITEMS), max_batch=16)
    products = ("aten.mm.", "aten.addmm.", "aten.linear.", "aten.bmm.", "aten.matmul.")
    left_out = [str(n.target) for n in lowered.exported_program().graph.nodes
                if n.op == "call_function" and any(p in str(n.target) for p in products)]
    assert not left_out
