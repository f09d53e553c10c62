"""The compressor contract: one item table, however it is stored."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import nn

FLOAT_BYTES = 4  # deployed floats are float32


def smallest_unsigned_dtype(max_value: int) -> np.dtype:
    """The smallest unsigned integer type that holds `max_value` (codes are stored so)."""
    for dtype in (np.uint8, np.uint16, np.uint32, np.uint64):
        if max_value <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    raise ValueError(f"{max_value} does not fit in 64 bits")


# the signed type of each unsigned width: how a deployed form holds a wider unsigned index
SAME_WIDTH_SIGNED = {torch.uint16: torch.int16, torch.uint32: torch.int32,
                     torch.uint64: torch.int64}


def held_index(index: np.ndarray | torch.Tensor) -> torch.Tensor:
    """An unsigned index array (codes, ids, columns) as a deployed form holds it: uint8 as is,
    a wider unsigned type as the signed type of its width holding the same bits (the same
    bytes; ExecuTorch has no kernel for uint16 or uint32, not even a cast). `widened` reads
    it back."""
    tensor = torch.from_numpy(index) if isinstance(index, np.ndarray) else index
    signed = SAME_WIDTH_SIGNED.get(tensor.dtype)
    return tensor if signed is None else tensor.view(signed)


def widened(index: torch.Tensor, dtype: torch.dtype = torch.int64) -> torch.Tensor:
    """The values of an index held by `held_index`, as `dtype` (int32 or int64)."""
    if index.dtype == torch.int16:  # 16 unsigned bits
        return index.to(dtype) & 0xFFFF
    if index.dtype == torch.int32:  # 32 unsigned bits
        return (index.long() & 0xFFFFFFFF).to(dtype)
    return index.to(dtype)


@dataclass(frozen=True)
class StoredTensor:
    name: str
    shape: tuple[int, ...]
    dtype: str

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize


@dataclass(frozen=True)
class StorageReport:
    """What the deployed item table stores, and how it compares with the dense table.

    `paper_ratio` is the compression rate by the paper's own formula for the method (Eq. 8 for
    sttd, Eq. 11 for ccode), which counts numbers, not bytes; `byte_ratio` counts real bytes.
    """

    tensors: tuple[StoredTensor, ...]
    num_items: int
    dim: int
    paper_ratio: float
    notes: tuple[str, ...] = field(default_factory=tuple)
    packed_bytes: int | None = None  # if the integer tensors were bit-packed (ccode: M log2 K bits)

    @property
    def total_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)

    @property
    def full_bytes(self) -> int:
        return self.num_items * self.dim * FLOAT_BYTES

    @property
    def byte_ratio(self) -> float:
        return self.full_bytes / self.total_bytes

    def to_dict(self) -> dict:
        return {
            "tensors": [{"name": t.name, "shape": list(t.shape), "dtype": t.dtype,
                         "bytes": t.nbytes} for t in self.tensors],
            "total_bytes": self.total_bytes,
            "full_bytes": self.full_bytes,
            "byte_ratio": self.byte_ratio,
            "paper_ratio": self.paper_ratio,
            "packed_bytes": self.packed_bytes,
            "packed_byte_ratio": None if self.packed_bytes is None
            else self.full_bytes / self.packed_bytes,
            "notes": list(self.notes),
        }


class _DenseScores(torch.autograd.Function):
    """`query @ table.T` whose table gradient comes out contiguous.

    Autograd's own matmul hands the table a transposed (non-contiguous) gradient, which then
    cannot absorb the lookup gradient in place and is copied again on accumulation: for a
    37k x 256 table that was 15% of a training step.
    """

    @staticmethod
    def forward(ctx, query: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(query, table)
        return query @ table.t()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        # under autocast the forward multiplied in bfloat16 while its inputs stay float32:
        # the backward multiplies in the gradient's type and hands each input its own back
        query, table = ctx.saved_tensors
        grad_query = ((grad @ table.to(grad.dtype)).to(query.dtype) if ctx.needs_input_grad[0]
                      else None)
        grad_table = (torch.mm(grad.t(), query.to(grad.dtype)).to(table.dtype)
                      if ctx.needs_input_grad[1] else None)
        return grad_query, grad_table


def dense_scores(query: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Scores of every row of `table` for each query, [B, rows]."""
    if query.dim() != 2:
        return query @ table.t()
    if torch.compiler.is_exporting() and not torch.onnx.is_in_onnx_export():
        # ExecuTorch: XNNPACK lowers a linear to its matrix product, where `query @ table.t()`
        # stays in the portable kernels (at Tmall's shape the dense model's call took 5.9x its
        # eager time, now 2.0x); the export hands it the table at run time, so it keeps no copy
        # (`lowered_to_xnnpack`)
        return torch.nn.functional.linear(query, table)
    if not (table.requires_grad and torch.is_grad_enabled()):  # tracers take no Function
        return query @ table.t()
    return _DenseScores.apply(query, table)


def items_by_count(counts: torch.Tensor, num_items: int) -> np.ndarray:
    """The real item ids (1..num_items - 1), the most frequent first, ties by id; `counts`
    must hold one count per item id (the hook `Compressor.init_from_counts` receives)."""
    if tuple(counts.shape) != (num_items,):
        raise ValueError(f"item counts are {tuple(counts.shape)}, expected ({num_items},): "
                         "another dataset")
    return np.argsort(-counts[1:].cpu().numpy(), kind="stable") + 1


class DeployedState:
    """For a compressor whose deployed form differs from its training form: `deployed`, kept
    in a buffer (so a checkpoint or saved model carries it) and mirrored in a plain bool
    (reading the buffer costs a few microseconds a call). Call `_init_deployed_state()` in
    `__init__`, `_set_deployed()` in `deploy()` and `undeploy()`."""

    def _init_deployed_state(self) -> None:
        self.register_buffer("is_deployed", torch.tensor(False))
        self._deployed = False
        self.register_load_state_dict_post_hook(
            lambda module, _: setattr(module, "_deployed", bool(module.is_deployed)))

    @property
    def deployed(self) -> bool:
        return self._deployed

    def _set_deployed(self, deployed: bool) -> None:
        self.is_deployed.fill_(deployed)
        self._deployed = deployed


class Compressor(nn.Module):
    """An item table of `num_items` rows (row 0 is padding, always zero) and `dim` columns.

    Subclasses implement `weight()` and `storage()`; `forward` and `score` have exact defaults
    that a subclass may replace with faster paths of the same value.
    """

    def __init__(self, num_items: int, dim: int) -> None:
        super().__init__()
        if num_items < 2:
            raise ValueError(f"an item table needs at least one real item, got num_items={num_items}")
        if dim < 1:
            raise ValueError(f"dim must be positive, got {dim}")
        self.num_items = num_items
        self.dim = dim
        self._sharing = False
        self._shared_table: torch.Tensor | None = None

    def weight(self) -> torch.Tensor:
        """The whole reconstructed table, [num_items, dim], row 0 zero."""
        raise NotImplementedError

    @contextmanager
    def shared_weight(self) -> Iterator[None]:
        """Within this block `current_weight()` reconstructs the table once and shares it.

        A training step looks items up and scores them: without sharing, a compressed table is
        rebuilt for each (and ccode would draw two code samples a step); an evaluation pass
        would rebuild it for every batch. Parameters must not change inside the block.
        """
        outer = self._sharing
        self._sharing = True
        try:
            yield
        finally:
            self._sharing = outer
            if not outer:
                self._shared_table = None

    def current_weight(self) -> torch.Tensor:
        """`weight()`, or the table already built in this `shared_weight()` block."""
        if not self._sharing:
            return self.weight()
        if self._shared_table is None:
            self._shared_table = self.weight()
        return self._shared_table

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return nn.functional.embedding(ids, self.current_weight())

    def score(self, query: torch.Tensor) -> torch.Tensor:
        """Scores of every item (padding column included) for each session vector: [B, num_items]."""
        return dense_scores(query, self.current_weight())

    def storage(self) -> StorageReport:
        raise NotImplementedError

    # Optional hooks the trainer calls; the defaults do nothing.
    def extra_loss(self) -> torch.Tensor | None:
        """An extra training loss (e.g. a reconstruction MSE), or None."""
        return None

    def uses_teacher(self) -> bool:
        """Whether this table starts from a trained uncompressed table (`init_from_table`)."""
        return False

    def init_from_table(self, table: torch.Tensor) -> None:
        """Initialise from a trained [num_items, dim] table (only called if `uses_teacher()`)."""
        raise NotImplementedError(f"{type(self).__name__} cannot start from a teacher table")

    def uses_item_counts(self) -> bool:
        """Whether this table is shaped by how often items occur (hot rows, mixed dimensions):
        the runner then calls `init_from_counts` with the training split's counts before
        training. Parameter shapes must follow from the config alone; which item gets which
        row is state (a buffer), saved with the model, so a deployed model loads without them."""
        return False

    def init_from_counts(self, counts: torch.Tensor) -> None:
        """Arrange the table by the training split's item counts ([num_items] int64, count 0
        for padding); only called if `uses_item_counts()`."""
        raise NotImplementedError(f"{type(self).__name__} does not use item counts")

    def start_epoch(self, epoch: int) -> dict[str, Any]:
        """Called before training epoch `epoch` (1-based); what it returns goes into that epoch's
        history (e.g. ccode freezing its codes)."""
        return {}

    def follow_teacher_table(self, table: torch.Tensor) -> None:
        """Distillation: the teacher's table as it is now (detached), before each step, for a
        table that keeps learning from it (ccode's mixup, reconstruction target and code
        encoder input, Algorithm 1). Default: nothing to follow."""

    def deploy(self) -> None:
        """Switch to the deployed inference form before the final test (default: already is)."""

    @contextmanager
    def compressed_scoring(self) -> Iterator[bool]:
        """Within this block, score with what is deployed alone, even where this table is set to
        a legacy scoring that mixes in more (ccode's `--eval-table mixed`). Yields whether that
        changes the scores, so a legacy run can record its deployed figures beside."""
        yield False

    @contextmanager
    def mixed_scoring(self) -> Iterator[bool]:
        """Within this block, score as the paper's released code scored its students: with the
        teacher's table mixed in (ccode's Eq. 16 at its eta), where this table has one. Yields
        whether it does; a legacy figure beside the deployed one, never what is deployed."""
        yield False

    def undeploy(self) -> None:
        """Back to the training form after loading a deployed model, to train on (distillation
        after pretraining); default: the deployed form is the training form."""

    def deploy_untrained(self, seed: int = 0) -> None:
        """Deploy with arbitrary values of the deployed structure, for timing alone.

        Default: a table shaped by item counts gets long-tailed random counts, a table that
        learns from a teacher starts from a random one, then `deploy()`.
        """
        g = torch.Generator().manual_seed(seed)
        if self.uses_item_counts():
            counts = (1000.0 / torch.arange(1, self.num_items + 1)).long()
            counts = counts[torch.randperm(self.num_items, generator=g)]
            counts[0] = 0
            self.init_from_counts(counts)
        if self.uses_teacher():
            self.init_from_table(0.1 * torch.randn(self.num_items, self.dim, generator=g))
        self.deploy()

    def inference_form(self, exportable: bool = False) -> "InferenceForm":
        """The table as a phone runs it: only what is deployed, in plain tensor ops.

        With `exportable`, only ops that ONNX and ExecuTorch export (e.g. no `embedding_bag`).
        The default wraps this compressor; override to drop training-only state (ccode).
        """
        return InferenceForm(self)


class InferenceForm(nn.Module):
    """Row lookups (`forward(ids)`) and scoring (`score(query)`) of a deployed table.

    A compressor without a row-wise `forward` of its own (its rows come from `weight()`) would
    rebuild the whole table for the encoder's lookups and again for scoring; within `call()` it
    is rebuilt once and shared (the compressor's `shared_weight()`), as a phone would do. The
    rebuilt table lives only during a call: it is never a parameter, buffer or constant.
    """

    # How an exportable form gathers many entries at once: element-wise (`torch.gather`, ONNX's
    # GatherElements, seven times faster there than its Gather of one axis), or, where this is
    # False, along one axis (`index_select`, `embedding`: three times faster in ExecuTorch than
    # its element-wise gather). `DeployedRecommender.for_executorch` sets it False.
    gather_elements: bool = True

    def __init__(self, compressor: Compressor | None) -> None:
        super().__init__()
        self.compressor = compressor
        if compressor is not None:  # backbones may ask their table for its shape
            self.num_items, self.dim = compressor.num_items, compressor.dim
        self.rebuilds_table = (compressor is not None
                               and type(compressor).forward is Compressor.forward)

    @contextmanager
    def call(self) -> Iterator[None]:
        """One call of the deployed model; a table the rows need is rebuilt on entry."""
        if self.compressor is None:
            yield
            return
        with self.compressor.shared_weight():
            if self.rebuilds_table:
                self.compressor.current_weight()
            yield

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.compressor(ids)

    def score(self, query: torch.Tensor) -> torch.Tensor:
        """Scores of every item, padding column included: [B, num_items]: the compressor's
        own scoring where it has one (hash scores its buckets, not a rebuilt table), else the
        product with its table."""
        if type(self.compressor).score is not Compressor.score:
            return self.compressor.score(query)
        return dense_scores(query, self.compressor.current_weight())

    def onnx_translations(self) -> dict[Any, Callable[..., Any]]:
        """The ONNX translations of the custom torch operators this form calls while it is
        exported to ONNX (`torch.onnx.is_in_onnx_export()`), to reach a runtime's own kernels
        (quant's int4 table: ONNX Runtime's MatMulNBits). None by default."""
        return {}

    def executorch_form(self) -> "InferenceForm":
        """The form an ExecuTorch export takes in this one's place, to reach the runtime's own
        kernels (quant: XNNPACK's quantised matrix products); this form by default. Its eager
        answers are what the exported model answers."""
        return self
