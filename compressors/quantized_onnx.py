"""A quant table's scoring as ONNX's and ONNX Runtime's quantised operators.

Exported with plain operators (integer initializers, Cast, Mul), a quantised table is widened
to float in every call. ONNX has operators that read the stored integers themselves:

- int8: `DequantizeLinear` (the ONNX standard, per-row scales along axis 0) feeding `Gemm`;
- int4: ONNX Runtime's `com.microsoft.MatMulNBits`, a 4-bit matmul whose weight layout is the
  stored table's own (one block per row of `block_size = dim` values, low nibble first, zero
  point 8, one scale a block). ONNX Runtime prepacks it at load and never widens the table (at
  Tmall's shape the whole int4 model runs at 0.90x the dense one, 3.2x with plain operators:
  `results/bench/latency-tmall-sasrec-full+quant-t1*.json`). It needs `dim` a power of two of
  at least 16 (its block sizes); other widths keep the plain operators.

`quant_scores` is a torch custom operator computing the same scores in eager PyTorch; a
deployed quant form calls it only while it is exported to ONNX, and `onnx_translations()`
gives the exporter its translation. TorchScript sees the plain operators; ExecuTorch has its
own kernels (`quantized_executorch`).
"""

from __future__ import annotations

from typing import Any, Callable

import torch

MATMUL_NBITS = "MatMulNBits"
MICROSOFT_DOMAIN = "com.microsoft"


def matmul_nbits_fits(bits: int, dim: int) -> bool:
    """Whether ONNX Runtime's MatMulNBits holds a table of `dim`-wide rows of `bits` bits in
    its stored layout (one block a row: block sizes are powers of two, at least 16)."""
    return bits == 4 and dim >= 16 and dim & (dim - 1) == 0


@torch.library.custom_op("ecbench::quant_scores", mutates_args=())
def quant_scores(query: torch.Tensor, qtable: torch.Tensor, scales: torch.Tensor, bits: int,
                 dim: int) -> torch.Tensor:
    """[B, rows] scores of a stored quant table (int8 [rows, dim], or int4 packed
    [rows, 1, ceil(dim / 2)], MatMulNBits' layout) with its per-row scales."""
    from ecbench.compressors.quantized import stored_scores  # that module imports this one

    return stored_scores(query, qtable.flatten(1), bits, dim) * scales


@quant_scores.register_fake
def _(query: torch.Tensor, qtable: torch.Tensor, scales: torch.Tensor, bits: int,
      dim: int) -> torch.Tensor:
    return query.new_empty(query.shape[0], qtable.shape[0])


def _register_matmul_nbits_schema() -> None:
    """ONNX Runtime's contrib operators have no schema in the `onnx` package; the exporter
    builds nodes from schemas, so MatMulNBits' (the inputs and attributes used here) is
    registered once."""
    import onnx
    from onnx.defs import OpSchema

    if onnx.defs.has(MATMUL_NBITS, MICROSOFT_DOMAIN):
        return
    onnx.defs.register_schema(OpSchema(
        MATMUL_NBITS, MICROSOFT_DOMAIN, 1,
        inputs=[OpSchema.FormalParameter("A", "T1"), OpSchema.FormalParameter("B", "T2"),
                OpSchema.FormalParameter("scales", "T1")],
        outputs=[OpSchema.FormalParameter("Y", "T1")],
        type_constraints=[("T1", ["tensor(float)"], "activations and scales"),
                          ("T2", ["tensor(uint8)"], "packed weights")],
        attributes=[OpSchema.Attribute(name, OpSchema.AttrType.INT, "")
                    for name in ("K", "N", "bits", "block_size")]))


def onnx_translations() -> dict[Any, Callable[..., Any]]:
    """The exporter's translation of `quant_scores` (needs onnx and onnxscript)."""
    import onnxscript
    from onnxscript import opset18 as op

    _register_matmul_nbits_schema()
    microsoft = onnxscript.values.Opset(MICROSOFT_DOMAIN, 1)

    def quant_scores_onnx(query: Any, qtable: Any, scales: Any, bits: int, dim: int) -> Any:
        if bits == 4:  # the table is MatMulNBits' B as stored: [rows, 1 block, dim / 2 bytes]
            return microsoft.MatMulNBits(query, qtable, scales, K=dim, N=int(qtable.shape[0]),
                                         bits=4, block_size=dim)
        return op.Gemm(query, op.DequantizeLinear(qtable, scales, axis=0), transB=1)

    return {torch.ops.ecbench.quant_scores.default: quant_scores_onnx}
