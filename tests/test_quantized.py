"""`quant`: per-row symmetric int8/int4 quantisation (checked against numpy), int4 packing,
straight-through QAT, the deployed integer form and its bytes, the budget."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from ecbench import compressors
from ecbench.compressors.quantized import (QuantConfig, QuantizedTable, pack_int4, quant_budget,
                                           unpack_int4)

QMAX = {8: 127, 4: 7}


def numpy_quantize(table: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-row quantisation, row by row in float32."""
    qmax = np.float32(QMAX[bits])
    q = np.zeros(table.shape, dtype=np.int64)
    scales = np.ones(len(table), dtype=np.float32)
    for i, row in enumerate(table):
        amax = np.float32(np.abs(row).max())
        if amax > 0:
            scales[i] = amax / qmax
            q[i] = np.clip(np.round(row / scales[i]), -qmax, qmax)
    return q, scales


def numpy_pack(q: np.ndarray) -> np.ndarray:
    """Two 4-bit values a byte: column 2j low nibble, 2j + 1 high nibble, each as q + 8."""
    rows, dim = q.shape
    out = np.zeros((rows, (dim + 1) // 2), dtype=np.uint8)
    for i in range(rows):
        for j in range(out.shape[1]):
            low = q[i, 2 * j] + 8
            high = q[i, 2 * j + 1] + 8 if 2 * j + 1 < dim else 8
            out[i, j] = low | (high << 4)
    return out


def table_with(num_items: int, dim: int, bits: int, mode: str = "ptq", seed: int = 0
               ) -> QuantizedTable:
    torch.manual_seed(seed)
    table = QuantizedTable(num_items, dim, QuantConfig(bits=bits, mode=mode))
    with torch.no_grad():
        table.table.normal_()
        table.table[3] = 0  # a zero real row
    return table


@pytest.mark.parametrize("bits, dim", [(8, 16), (4, 16), (4, 15)])
def test_deploy_quantises_each_row_as_the_numpy_reference(bits, dim):
    table = table_with(201, dim, bits)
    w = table.table.detach().numpy().copy()
    w[0] = 0  # the padding row
    table.deploy()
    q, scales = numpy_quantize(w, bits)
    stored = table.qtable.numpy()
    if bits == 8:
        assert table.qtable.dtype == torch.int8 and np.array_equal(stored.astype(np.int64), q)
    else:
        assert table.qtable.dtype == torch.uint8 and np.array_equal(stored, numpy_pack(q))
    np.testing.assert_array_equal(table.scales.numpy(), scales)
    assert scales[0] == 1 and scales[3] == 1  # zero rows: scale 1, values 0
    deployed = table.weight().numpy()
    assert np.all(deployed[0] == 0) and np.all(deployed[3] == 0)
    # round trip: each entry within half a step of its row
    assert np.all(np.abs(deployed - w) <= scales[:, None] / 2 * (1 + 1e-5))
    assert table.table.numel() == 0  # the float table is gone


@pytest.mark.parametrize("dim", [1, 6, 7])
def test_int4_packing_matches_the_numpy_reference_and_unpacks(dim):
    g = torch.Generator().manual_seed(dim)
    q = torch.randint(-7, 8, (9, dim), generator=g)
    packed = pack_int4(q)
    assert packed.dtype == torch.uint8 and packed.shape == (9, (dim + 1) // 2)
    assert np.array_equal(packed.numpy(), numpy_pack(q.numpy()))
    assert torch.equal(unpack_int4(packed, dim), q.to(torch.int32))
    assert torch.equal(unpack_int4(packed[[2, 5]].unsqueeze(0), dim)[0], q[[2, 5]].to(torch.int32))


@pytest.mark.parametrize("bits", [8, 4])
def test_qat_trains_on_the_deployed_values_with_straight_through_gradients(bits):
    table = table_with(101, 10, bits, mode="qat").train()
    weight = table.weight()
    deployed = copy.deepcopy(table)
    deployed.deploy()
    assert torch.equal(weight.detach(), deployed.weight())  # training sees what is deployed
    assert not torch.equal(weight.detach()[1:], table.table.detach()[1:])  # and it is rounded
    coefficients = torch.randn(101, 10)
    (weight * coefficients).sum().backward()
    expected = coefficients.clone()
    expected[0] = 0  # the padding row takes no gradient
    assert torch.equal(table.table.grad, expected)  # the rounding passes gradients through


def test_ptq_trains_on_floats_and_evaluates_what_it_will_deploy():
    table = table_with(101, 10, 8, mode="ptq").train()
    float_rows = table.table.detach().clone()
    float_rows[0] = 0
    assert torch.equal(table.weight().detach(), float_rows)
    table.eval()
    previewed = table.weight().detach()
    table.deploy()
    assert torch.equal(previewed, table.weight())


@pytest.mark.parametrize("bits", [8, 4])
def test_ptq_and_qat_deploy_to_the_same_storage(bits):
    reports, states = [], []
    for mode in ("ptq", "qat"):
        table = table_with(101, 9, bits, mode=mode)
        table.deploy()
        reports.append(table.storage().to_dict())
        states.append({k: (tuple(v.shape), v.dtype) for k, v in table.state_dict().items()})
    assert reports[0]["tensors"] == reports[1]["tensors"]
    assert reports[0]["total_bytes"] == reports[1]["total_bytes"]
    assert states[0] == states[1]


@pytest.mark.parametrize("bits", [8, 4])
def test_deployed_scores_and_rows_are_the_integer_table_times_the_scales(bits):
    table = table_with(61, 7, bits)
    table.deploy()
    q = unpack_int4(table.qtable, 7).numpy() if bits == 4 else table.qtable.numpy()
    scales = table.scales.numpy()
    query = torch.randn(3, 7)
    expected = np.array([[sum(float(qv[j]) * float(q[v, j]) for j in range(7)) * float(scales[v])
                          for v in range(61)] for qv in query.numpy()])
    np.testing.assert_allclose(table.score(query).numpy(), expected, rtol=1e-5, atol=1e-5)
    ids = torch.tensor([[0, 4], [60, 3]])
    assert torch.equal(table(ids), table.weight()[ids])
    for exportable in (False, True):
        form = table.inference_form(exportable)
        np.testing.assert_allclose(form.score(query).numpy(), expected, rtol=1e-5, atol=1e-5)
        assert torch.equal(form(ids), table.weight()[ids])
        held = dict(form.named_buffers()) | dict(form.named_parameters())
        assert sorted(held) == ["qtable", "scales"]
        assert held["qtable"].dtype == (torch.int8 if bits == 8 else torch.uint8)


@pytest.mark.parametrize("bits", [8, 4])
def test_a_deployed_model_loads_and_undeploys_to_a_trainable_dequantised_table(bits):
    table = table_with(51, 6, bits, mode="qat")
    table.deploy()
    state = table.state_dict()
    fresh = QuantizedTable(51, 6, QuantConfig(bits=bits, mode="qat"))
    fresh.load_state_dict(state)
    assert fresh.deployed and torch.equal(fresh.weight(), table.weight())
    fresh.undeploy()
    assert not fresh.deployed and fresh.table.requires_grad
    assert torch.equal(fresh.table.detach(), table.weight())
    qtable, scales = fresh.qtable.clone(), fresh.scales.clone()
    fresh.deploy()  # quantising the dequantised values gives them back
    assert torch.equal(fresh.qtable, qtable) and torch.allclose(fresh.scales, scales)
    trained = QuantizedTable(51, 6, QuantConfig(bits=bits))
    trained.load_state_dict(fresh.state_dict())  # and a deployed one takes a training state
    trained.undeploy()
    trained.load_state_dict(table_with(51, 6, bits).state_dict())
    assert trained.table.shape == (51, 6) and not trained.deployed


def test_storage_counts_the_integer_bytes_and_scales_by_hand():
    int8 = QuantizedTable(1001, 16, QuantConfig(bits=8)).storage()
    assert int8.total_bytes == 1001 * 16 + 1001 * 4 and int8.paper_ratio == 4.0
    int4 = QuantizedTable(1001, 15, QuantConfig(bits=4)).storage()
    assert int4.total_bytes == 1001 * 8 + 1001 * 4 and int4.paper_ratio == 8.0
    assert [t.dtype for t in int4.tensors] == ["uint8", "float32"]


def test_budget_picks_eight_bits_when_they_meet_the_ratio_else_four():
    n, dim = 10_001, 64
    assert quant_budget(QuantConfig(mode="qat"), n, dim, 3.5) == QuantConfig(bits=8, mode="qat")
    solved = quant_budget(QuantConfig(), n, dim, 5.0)  # int8 gives 3.76x, int4 7.11x
    assert solved.bits == 4
    assert QuantizedTable(n, dim, solved).storage().byte_ratio >= 5.0
    with pytest.raises(ValueError, match="--ratio 8 is out of reach for quant"):
        quant_budget(QuantConfig(), n, dim, 8.0)


def test_bad_options_are_refused_clearly():
    with pytest.raises(ValueError, match="--bits must be 8 or 4, got 2"):
        QuantConfig(bits=2)
    with pytest.raises(ValueError, match="--mode must be ptq .* or qat .*, got 'int'"):
        QuantConfig(mode="int")


def test_registered_with_a_budget():
    entry = compressors.registry.get("quant")
    assert entry.budget is quant_budget and entry.flags() == ["--bits", "--mode"]
    table = compressors.build("quant", num_items=501, dim=16)
    assert table.storage().byte_ratio > 3


class Scorer(torch.nn.Module):
    """A deployed quant form's scoring alone, to export."""

    def __init__(self, form: torch.nn.Module) -> None:
        super().__init__()
        self.form = form

    def forward(self, query: torch.Tensor) -> torch.Tensor:
        return self.form.score(query)


def deployed_scorer(num_items: int, dim: int, bits: int, executorch: bool = False
                    ) -> tuple[Scorer, np.ndarray]:
    """The scoring of a deployed table (in its ExecuTorch form if asked), and the table it
    stores as numpy reads it: the integers times the scales."""
    table = table_with(num_items, dim, bits)
    table.deploy()
    form = table.inference_form(exportable=True)
    q = (unpack_int4(table.qtable, dim) if bits == 4 else table.qtable).numpy().astype(np.float64)
    return (Scorer(form.executorch_form() if executorch else form).eval(),
            q * table.scales.numpy()[:, None])


@pytest.mark.parametrize("bits, dim, operator", [(8, 16, "DequantizeLinear"),
                                                 (4, 16, "MatMulNBits"), (4, 12, None)])
def test_onnx_scores_through_the_quantised_operators_on_the_stored_integers(bits, dim, operator,
                                                                            tmp_path):
    """int8 through DequantizeLinear, int4 through ONNX Runtime's MatMulNBits where its block
    sizes fit the width (else plain operators); the integers are the graph's own initializers
    (no float table) and ONNX Runtime's scores are numpy's."""
    from ecbench.bench.deploy.export import missing_runtime, onnx_session

    if missing_runtime("onnx"):
        pytest.skip(missing_runtime("onnx"))
    import onnx

    model, expected_table = deployed_scorer(301, dim, bits)
    query = torch.randn(3, dim)
    path = str(tmp_path / "scores.onnx")
    torch.onnx.export(model, (query,), dynamo=True, optimize=False, input_names=["query"],
                      custom_translation_table=model.form.onnx_translations() or None,
                      dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=8)},)).save(path)
    graph = onnx.load(path).graph
    operators = {node.op_type for node in graph.node}
    assert (operator in operators) if operator else not operators & {"DequantizeLinear",
                                                                     "MatMulNBits"}
    assert {onnx.helper.tensor_dtype_to_np_dtype(t.data_type) for t in graph.initializer
            if t.dims[0] == 301} == {np.dtype(np.int8 if bits == 8 else np.uint8), np.dtype(np.float32)}
    assert all(np.prod(t.dims) < 301 * dim for t in graph.initializer
               if t.data_type == onnx.TensorProto.FLOAT)  # the scales, no float table
    for batch in (1, 3):
        scores = onnx_session(path).run(None, {"query": query[:batch].numpy()})[0]
        np.testing.assert_allclose(scores, query[:batch].numpy().astype(np.float64)
                                   @ expected_table.T, rtol=1e-4, atol=1e-4)


def numpy_xnnpack_query(query: np.ndarray) -> np.ndarray:
    """The query as XNNPACK's quantised kernels read it: each row rounded to int8 with its own
    scale and zero point (XNNPACK's quantization.h: the range widened to hold 0, split into 255
    steps, the zero point from the end that rounds less), then read back as floats."""
    out = np.empty_like(query, dtype=np.float64)
    for i, row in enumerate(query.astype(np.float32)):
        low, high = min(row.min(), np.float32(0)), max(row.max(), np.float32(0))
        scale = max((high - low) / np.float32(255), np.finfo(np.float32).eps)
        from_low, from_high = -128 + low / scale, 127 + high / scale
        zero = -128 - low / scale if from_low + from_high > 0 else 127 - high / scale
        zero = np.round(np.clip(zero, -128, 127))
        q = np.clip(np.round(row * np.float32(1 / scale) + zero), -128, 127)
        out[i] = (q - zero) * np.float64(scale)
    return out


@pytest.mark.parametrize("bits", [8, 4])
def test_executorch_scores_through_xnnpacks_quantised_kernels_on_the_stored_integers(bits,
                                                                                      tmp_path):
    """Lowered to ExecuTorch, scoring is one XNNPACK call that reads the stored integers (no
    float table, no dequantisation left outside it), and its scores are numpy's: the integer
    table times the scales against the query rounded to int8 per row; they differ from the
    exact scores by that rounding only."""
    from ecbench.bench.deploy.export import missing_runtime

    if missing_runtime("executorch"):
        pytest.skip(missing_runtime("executorch"))
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower
    from executorch.runtime import Runtime

    num_items, dim = 2001, 32
    model, expected_table = deployed_scorer(num_items, dim, bits, executorch=True)
    query = torch.randn(3, dim)
    exported = torch.export.export(model, (query,),
                                   dynamic_shapes=({0: torch.export.Dim("batch", max=8)},))
    lowered = to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()])
    calls = {str(n.target) for n in lowered.exported_program().graph.nodes
             if n.op == "call_function"}
    assert calls == {"executorch_call_delegate", "<built-in function getitem>"}
    program = lowered.to_executorch().buffer
    # the stored integers (the lookups read them) and XNNPACK's packed copy; a float table: 4
    assert len(program) < num_items * dim * (2.5 if bits == 8 else 1.5)
    method = Runtime.get().load_program(program).load_method("forward")
    for batch in (1, 3):
        got = method.execute([query[:batch]])[0].numpy()
        np.testing.assert_allclose(got, numpy_xnnpack_query(query[:batch].numpy())
                                   @ expected_table.T, rtol=1e-4, atol=1e-4)
        exact = query[:batch].numpy().astype(np.float64) @ expected_table.T
        assert 1e-4 < np.abs(got - exact).max() < 0.05 * np.abs(exact).max()
