"""`quant`: an int8 or int4 item table with one float32 scale per row.

Symmetric per-row quantisation: s_v = max_j |w_vj| / qmax and q_vj = round(w_vj / s_v) in
[-qmax, qmax], qmax = 127 for 8 bits and 7 for 4 bits (a zero row, the padding row among them,
gets s = 1 and q = 0); the deployed row is q_v * s_v. Two ways to get there (`--mode`):

- `ptq` (post-training quantisation): training updates a float table and sees float values;
  `deploy()` quantises it. Evaluation before `deploy()` already scores the values `deploy()`
  would store (as ccode's validation scores its deployable codes), so that model selection
  measures the deployed table; training alone is float.
- `qat` (quantisation-aware training): every forward pass sees the quantised values through a
  straight-through estimator (the forward value is dequant(quant(w)), the gradient reaches w
  as if the rounding were the identity), so training adapts to what is deployed.

Deployed, the table is an int8 [N, dim] buffer, or for 4 bits a uint8 [N, ceil(dim / 2)] buffer
holding two values a byte (column 2j in the low nibble, 2j + 1 in the high one, each stored as
q + 8), and the scales [N]; the float table is freed. `undeploy()` gives a float table back
(the dequantised values) to train on. Scoring is exact: (query @ q.T) * s. Exported to ONNX,
int8 scores through DequantizeLinear and int4 through ONNX Runtime's MatMulNBits, which read
the stored integers (`quantized_onnx`); exported to ExecuTorch, through XNNPACK's quantised
matrix products, the query quantised to int8 as they do (`quantized_executorch`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Literal

import torch
from torch import nn

from ecbench.compressors import registry
from ecbench.compressors.base import (Compressor, DeployedState, InferenceForm, StorageReport,
                                      StoredTensor, dense_scores)
from ecbench.compressors.budget import largest_meeting
from ecbench.compressors.quantized_executorch import xnnpack_fits, xnnpack_scores
from ecbench.compressors.quantized_onnx import matmul_nbits_fits, onnx_translations, quant_scores

QMAX = {8: 127, 4: 7}
INT4_OFFSET = 8  # a 4-bit value q in [-7, 7] is stored as the nibble q + 8


@dataclass
class QuantConfig:
    bits: int = 8  # 8: int8 table; 4: int4, two values a byte
    mode: Literal["ptq", "qat"] = "ptq"  # post-training or quantisation-aware training

    def __post_init__(self) -> None:
        if self.bits not in QMAX:
            raise ValueError(f"--bits must be 8 or 4, got {self.bits}")
        if self.mode not in ("ptq", "qat"):
            raise ValueError(f"--mode must be ptq (post-training quantisation) or qat "
                             f"(quantisation-aware training), got {self.mode!r}")


def quantize_rows(table: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(q, s): the integer values (in `table`'s float type) and the per-row scales [rows]."""
    qmax = QMAX[bits]
    amax = table.abs().amax(-1)
    scales = torch.where(amax > 0, amax / qmax, torch.ones_like(amax))
    q = torch.round(table / scales.unsqueeze(-1)).clamp_(-qmax, qmax)
    return q, scales


def fake_quantize(table: torch.Tensor, bits: int) -> torch.Tensor:
    """dequant(quant(table)) in the forward pass, the identity in the backward (straight-
    through): w + (dequant(quant(w)) - w).detach(), written so that the forward value is the
    dequantised value exactly (no rounding of the subtraction and addition)."""
    q, scales = quantize_rows(table.detach(), bits)
    return q * scales.unsqueeze(-1) + (table - table.detach())


def stored_columns(dim: int, bits: int) -> int:
    return dim if bits == 8 else (dim + 1) // 2


def pack_int4(q: torch.Tensor) -> torch.Tensor:
    """[..., dim] values in [-7, 7] -> uint8 [..., ceil(dim / 2)]: column 2j in the low nibble
    of byte j, column 2j + 1 in the high nibble, each as q + 8 (an odd dim pads with 0)."""
    nibbles = q.to(torch.int32) + INT4_OFFSET
    if nibbles.shape[-1] % 2:
        pad = torch.full_like(nibbles[..., :1], INT4_OFFSET)
        nibbles = torch.cat([nibbles, pad], -1)
    return (nibbles[..., 0::2] + 16 * nibbles[..., 1::2]).to(torch.uint8)


def unpack_int4(packed: torch.Tensor, dim: int) -> torch.Tensor:
    """uint8 [..., ceil(dim / 2)] -> int32 values [..., dim]; integer division and subtraction
    only, which every export format runs (ONNX's BitShift takes no signed types)."""
    b = packed.to(torch.int32)
    high = torch.div(b, 16, rounding_mode="floor")
    low = b - 16 * high
    return torch.stack((low, high), -1).flatten(-2)[..., :dim] - INT4_OFFSET


def stored_scores(query: torch.Tensor, qtable: torch.Tensor, bits: int, dim: int
                  ) -> torch.Tensor:
    """query @ q.T for the stored integer table, [B, rows]. For int4 each nibble column is
    split off with byte ops and multiplied by its half of the query (even columns by the low
    nibbles, odd by the high), the + 8 offset taken off the sums: no unpacked [rows, dim]
    table is assembled, which cost ten times the product itself."""
    if bits == 8:
        return query @ qtable.to(query.dtype).t()
    if dim % 2:  # the padding nibble (stored as 8, value 0) meets a zero query column
        query = torch.cat([query, torch.zeros_like(query[..., :1])], -1)
    low = torch.bitwise_and(qtable, 15)
    high16 = qtable - low  # 16 x the high nibble, still one byte (a shift does not export)
    even, odd = query[..., 0::2], query[..., 1::2]
    offset = INT4_OFFSET * query.sum(-1, keepdim=True)
    return (even @ low.to(query.dtype).t() + (odd / 16) @ high16.to(query.dtype).t()
            - offset)


def stored_values(qtable: torch.Tensor, bits: int, dim: int) -> torch.Tensor:
    """The integer values of a stored table (int8 as is, int4 unpacked), [..., dim]."""
    return qtable if bits == 8 else unpack_int4(qtable, dim)


def to_stored(q: torch.Tensor, bits: int) -> torch.Tensor:
    """Integer values -> the stored table (int8, or int4 packed into uint8)."""
    return q.to(torch.int8) if bits == 8 else pack_int4(q)


class QuantizedTable(DeployedState, Compressor):
    def __init__(self, num_items: int, dim: int, config: QuantConfig) -> None:
        super().__init__(num_items, dim)
        self.config = config
        self.bits = config.bits
        self.table = nn.Parameter(torch.empty(num_items, dim).uniform_(-0.1, 0.1))
        self.register_buffer("qtable", to_stored(torch.zeros(num_items, dim), self.bits))
        self.register_buffer("scales", torch.ones(num_items))
        self.register_buffer("row_mask", (torch.arange(num_items) > 0).unsqueeze(1),
                             persistent=False)
        self._init_deployed_state()

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any,
                              **kwargs: Any) -> None:
        # a deployed model holds no float table ([0, dim]), a training one the whole table:
        # either loads into either state
        incoming = state_dict.get(prefix + "table")
        if incoming is not None and tuple(incoming.shape) in {(0, self.dim),
                                                              (self.num_items, self.dim)}:
            self.table.data = self.table.data.new_empty(incoming.shape)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # -- values --------------------------------------------------------------------------------
    def quantized(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(stored integer table, scales): the deployed buffers, or what `deploy()` would
        store from the float table now."""
        if self.deployed:
            return self.qtable, self.scales
        with torch.no_grad():
            q, scales = quantize_rows(self.table * self.row_mask, self.bits)
        return to_stored(q, self.bits), scales

    def dequantized(self) -> torch.Tensor:
        """The deployed table as floats, q * s, [N, dim]."""
        return stored_values(self.qtable, self.bits, self.dim).float() * self.scales.unsqueeze(1)

    def weight(self) -> torch.Tensor:
        if self.deployed:
            return self.dequantized()
        table = self.table * self.row_mask.to(self.table.dtype)
        if self.config.mode == "qat" or not self.training:  # ptq evaluation: what is deployed
            return fake_quantize(table, self.bits)
        return table

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if not self.deployed:
            return super().forward(ids)
        values = stored_values(self.qtable[ids], self.bits, self.dim)
        return values.float() * self.scales[ids].unsqueeze(-1)

    def score(self, query: torch.Tensor) -> torch.Tensor:
        """Deployed: (query @ q.T) * s, exact; before: the dense product."""
        if not self.deployed:
            return dense_scores(query, self.current_weight())
        scores = stored_scores(query, self.qtable, self.bits, self.dim)
        return scores * self.scales.to(query.dtype)

    # -- deployment ----------------------------------------------------------------------------
    @torch.no_grad()
    def deploy(self) -> None:
        """Quantise the float table into the integer buffers and free it."""
        if self.deployed:
            return
        qtable, scales = self.quantized()
        self.qtable.copy_(qtable)
        self.scales.copy_(scales)
        self.table.data = self.table.data.new_empty(0, self.dim)
        self.table.grad = None
        self._set_deployed(True)

    @torch.no_grad()
    def undeploy(self) -> None:
        """A trainable float table again: the dequantised deployed values."""
        if not self.deployed:
            return
        self.table.data = self.dequantized().to(self.table.dtype)
        self._set_deployed(False)

    def inference_form(self, exportable: bool = False) -> "QuantizedForm":
        """The integer table (as stored) and the scales only."""
        qtable, scales = self.quantized()
        return QuantizedForm(qtable.detach().cpu().clone(), scales.detach().cpu().clone(),
                             self.bits, self.dim)

    def storage(self) -> StorageReport:
        columns = stored_columns(self.dim, self.bits)
        table = (StoredTensor("table", (self.num_items, columns), "int8") if self.bits == 8
                 else StoredTensor("table", (self.num_items, columns), "uint8"))
        notes = (f"int{self.bits} table" + ("" if self.bits == 8 else
                                            ", two values a byte (q + 8 per nibble)")
                 + f", one float32 scale per row; {self.config.mode}"
                 + ("" if self.deployed else " (not deployed yet)"),
                 f"paper ratio 32/{self.bits} counts the table's bits alone; the byte ratio "
                 "counts the scales" + (" and an odd dim's padding nibble" if self.bits == 4
                                        and self.dim % 2 else ""))
        return StorageReport(
            tensors=(table, StoredTensor("scales", (self.num_items,), "float32")),
            num_items=self.num_items, dim=self.dim, paper_ratio=32 / self.bits, notes=notes)


class QuantizedForm(InferenceForm):
    """A deployed quant table: the integer table as stored (int8, or int4 packed into uint8)
    and the per-row scales; never a float [num_items, dim] table (scoring widens the integers
    during a call only). Exported to ONNX it scores through the quantised operators
    (`quantized_onnx`); an int4 table MatMulNBits reads is held in its layout, [rows, 1, bytes]
    (the same bytes). `executorch_form()` gives the form an ExecuTorch export takes."""

    def __init__(self, qtable: torch.Tensor, scales: torch.Tensor, bits: int, dim: int,
                 xnnpack: bool = False) -> None:
        super().__init__(None)
        self.num_items, self.dim, self.bits = qtable.shape[0], dim, bits
        self.nbits_layout = matmul_nbits_fits(bits, dim)  # held as [rows, 1 block, bytes]
        self.onnx_operators = bits == 8 or self.nbits_layout
        self.register_buffer("qtable", qtable.unsqueeze(1) if self.nbits_layout else qtable)
        self.register_buffer("scales", scales)
        # ExecuTorch's form: the integer values XNNPACK's kernels read (int4 one a byte; XNNPACK
        # packs them at lowering), scoring through them with the query quantised
        self.register_buffer("kernel_values", stored_values(qtable, bits, dim).to(torch.int8)
                             if xnnpack else None)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        rows = self.qtable[ids]
        if self.nbits_layout:
            rows = rows.squeeze(-2)
        values = stored_values(rows, self.bits, self.dim)
        return values.float() * self.scales[ids].unsqueeze(-1)

    def score(self, query: torch.Tensor) -> torch.Tensor:
        if self.kernel_values is not None:
            return xnnpack_scores(query, self.kernel_values, self.scales, self.bits)
        if self.onnx_operators and torch.onnx.is_in_onnx_export():
            return quant_scores(query, self.qtable, self.scales, self.bits, self.dim)
        return stored_scores(query, self.qtable.flatten(1), self.bits, self.dim) * self.scales

    def onnx_translations(self) -> dict[Any, Callable[..., Any]]:
        return onnx_translations() if self.onnx_operators else {}

    def executorch_form(self) -> "QuantizedForm":
        """This table scoring through XNNPACK's quantised kernels (`quantized_executorch`),
        where they take its width."""
        if self.kernel_values is not None or not xnnpack_fits(self.bits, self.dim):
            return self
        return QuantizedForm(self.qtable.flatten(1), self.scales, self.bits, self.dim,
                             xnnpack=True)


def quant_budget(config: QuantConfig, num_items: int, dim: int, ratio: float) -> QuantConfig:
    """8 bits if they meet `ratio`, else 4 bits, else the ratio is out of reach."""
    def table_bytes(bits: int) -> int:
        return num_items * stored_columns(dim, bits) + num_items * 4

    bits = largest_meeting((4, 8), table_bytes, num_items * dim * 4, ratio, "quant (int8/int4)")
    return dataclasses.replace(config, bits=bits)


@registry.register("quant", config=QuantConfig, budget=quant_budget,
                   description="int8/int4 table with a float32 scale per row "
                               "(post-training or quantisation-aware training)")
def build_quant(config: QuantConfig, *, num_items: int, dim: int) -> QuantizedTable:
    return QuantizedTable(num_items, dim, config)

