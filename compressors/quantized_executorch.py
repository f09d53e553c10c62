"""A quant table's scoring as ExecuTorch's XNNPACK quantised kernels read it.

Exported with plain operators, a quantised table is widened to float in every call (at Tmall's
shape the whole ExecuTorch model ran at 2.0x the dense one for int8, 1.9x for int4; through
these kernels at 0.61x and 0.55x: `results/bench/latency-tmall-sasrec-full+quant-t1*.json`).
XNNPACK's quantised
matrix products take integer weights with one scale a row (int8, or int4 which it packs two a
byte at lowering) and a query quantised to int8 on the fly, one scale and zero point per
query row (its `qd8` kernels). The partitioner recognises them by a pattern of
`quantized_decomposed` operators: the weights' `dequantize_per_channel` and the query's
per-token dynamic quantisation, both feeding a `linear`. `xnnpack_scores` writes that pattern
on the stored integers and scales, so nothing is re-quantised: the kernel reads the table as
trained.

In eager PyTorch the same operators compute the same numbers, so the exported model answers
as its eager self; both differ from the exact scores by the query's rounding to int8 (a few
thousandths of a score at unit-scale queries).

XNNPACK keeps its own packed copy of the weights, and the session's item lookups read the
stored table: an ExecuTorch artefact holds the integers twice.
"""

from __future__ import annotations

import torch
import torch.ao.quantization.fx._decomposed  # noqa: F401  registers torch.ops.quantized_decomposed

QUANT_RANGE = {8: (-127, 127), 4: (-8, 7)}  # the weights' range as XNNPACK's kernels declare it


def xnnpack_fits(bits: int, dim: int) -> bool:
    """Whether XNNPACK's quantised kernels take `dim`-wide rows of `bits` bits (its 4-bit
    kernels pack two values a byte along a row: an even width)."""
    return bits == 8 or dim % 2 == 0


def xnnpack_scores(query: torch.Tensor, values: torch.Tensor, scales: torch.Tensor,
                   bits: int) -> torch.Tensor:
    """[B, rows] scores of int8 `values` [rows, dim] (int4 values one a byte) with per-row
    `scales`, the query quantised per row to int8 as XNNPACK's kernels do."""
    ops = torch.ops.quantized_decomposed
    low, high = QUANT_RANGE[bits]
    zero_points = torch.zeros(values.shape[0], dtype=torch.long, device=values.device)
    weights = ops.dequantize_per_channel.default(values, scales, zero_points, 0, low, high,
                                                 torch.int8)
    query_scales, query_zeros = ops.choose_qparams_per_token_asymmetric.default(query,
                                                                                torch.int8)
    quantized = ops.quantize_per_token.default(query, query_scales, query_zeros, -128, 127,
                                               torch.int8)
    query = ops.dequantize_per_token.default(quantized, query_scales, query_zeros, -128, 127,
                                             torch.int8, query.dtype)
    return torch.nn.functional.linear(query, weights)
