"""`prune`: a dense table pruned by magnitude to a target density, deployed as CSR.

Training is gradual magnitude pruning (Zhu & Gupta 2017, "To prune, or not to prune"): the
first epoch trains the dense table; before each of the next `prune_epochs` epochs the mask
keeps the entries of largest |w| (one global threshold over the real rows) so that the
density follows the cubic schedule

    d(e) = d_f + (1 - d_f) (1 - min(e - 1, P) / P)^3,   e = 1, 2, ...

from 1 at epoch 1 to the target d_f at epoch P + 1. The table used is `table * mask`, so a
pruned entry gets no gradient and stays zero (Adam's momentum may move the raw parameter behind
the mask, never the table); a pruned entry never returns, since the mask is recomputed from the
masked table. Evaluation before `deploy()` sees the table `deploy()` would store, so
validation measures the deployed density even while the schedule is still running.

`deploy()` keeps exactly round(density (num_items - 1) dim) entries (the largest |w|) and
stores them in CSR form: float32 values [nnz], column indices in the smallest unsigned type
holding dim - 1 [nnz], row pointers int32 (int64 past 2^31 entries) [num_items + 1]; all three
are counted. The inference form holds only these arrays: rows are gathered from CSR per id,
eager scoring is a sparse-dense product, and the exportable form scores entry by entry (each
stored value times its column of the query, summed into its row's score by a scatter-add),
O(nnz) a query, with no table rebuilt.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ecbench.compressors import registry
from ecbench.compressors.base import (Compressor, DeployedState, InferenceForm, StorageReport,
                                      StoredTensor, held_index, smallest_unsigned_dtype, widened)
from ecbench.compressors.budget import largest_meeting

INT32_MAX = 2**31 - 1
TORCH_DTYPES = {"uint8": torch.uint8, "uint16": torch.uint16, "uint32": torch.uint32,
                "int32": torch.int32, "int64": torch.int64}


@dataclass
class PruneConfig:
    density: float = 0.1  # the fraction of the real rows' entries kept (nonzero) when deployed
    prune_epochs: int = 3  # epochs over which the density falls from 1 to `density`

    def __post_init__(self) -> None:
        if not 0.0 < self.density < 1.0:
            raise ValueError(f"--density must be in (0, 1) (the fraction of entries kept), got "
                             f"{self.density}")
        if self.prune_epochs < 1:
            raise ValueError(f"--prune-epochs must be at least 1, got {self.prune_epochs}")


def kept_entries(density: float, num_items: int, dim: int) -> int:
    """The entries a deployed table of this density keeps (over the real rows)."""
    return round(density * (num_items - 1) * dim)


def csr_tensors(num_items: int, dim: int, nnz: int) -> tuple[StoredTensor, ...]:
    """What a deployed pruned table stores: CSR values, column indices and row pointers."""
    pointer = "int32" if nnz <= INT32_MAX else "int64"
    return (StoredTensor("values", (nnz,), "float32"),
            StoredTensor("columns", (nnz,), smallest_unsigned_dtype(dim - 1).name),
            StoredTensor("row_pointers", (num_items + 1,), pointer))


def scheduled_density(target: float, prune_epochs: int, epoch: int) -> float:
    """Zhu & Gupta's cubic schedule by epoch: 1 at epoch 1, `target` from epoch P + 1 on."""
    progress = min(max(epoch - 1, 0), prune_epochs) / prune_epochs
    return target + (1.0 - target) * (1.0 - progress) ** 3


def top_magnitude_mask(table: torch.Tensor, keep: int) -> torch.Tensor:
    """A [num_items, dim] bool mask of the `keep` entries of largest |w| among the real rows
    (row 0, padding, never kept); exactly `keep` entries even where magnitudes tie."""
    real = table[1:].detach().abs().flatten()
    mask = torch.zeros(table.numel(), dtype=torch.bool, device=table.device)
    if keep >= real.numel():
        mask[table.shape[1]:] = True
    else:
        mask[table.shape[1] + real.topk(keep, sorted=False).indices] = True
    return mask.view(table.shape)


class PrunedTable(DeployedState, Compressor):
    def __init__(self, num_items: int, dim: int, config: PruneConfig) -> None:
        super().__init__(num_items, dim)
        self.config = config
        self.nnz = kept_entries(config.density, num_items, dim)
        if self.nnz < 1:
            raise ValueError(f"--density {config.density:g} keeps no entry of a "
                             f"{num_items - 1} x {dim} table")
        self.table = nn.Parameter(torch.empty(num_items, dim).uniform_(-0.1, 0.1))
        mask = torch.ones(num_items, dim, dtype=torch.bool)
        mask[0] = False
        self.register_buffer("mask", mask)
        with torch.no_grad():
            self.table[0].zero_()
        stored = csr_tensors(num_items, dim, self.nnz)
        # the deployed CSR arrays, at their stored types; shapes follow from the config
        self.register_buffer("values", torch.zeros(self.nnz))
        self.register_buffer("columns", torch.zeros(self.nnz, dtype=TORCH_DTYPES[stored[1].dtype]))
        self.register_buffer("row_pointers", torch.zeros(num_items + 1,
                                                         dtype=TORCH_DTYPES[stored[2].dtype]))
        self._init_deployed_state()

    def density(self) -> float:
        """The training mask's current density over the real rows."""
        return float(self.mask[1:].sum()) / ((self.num_items - 1) * self.dim)

    def weight(self) -> torch.Tensor:
        if self.deployed:
            return self.dense_from_csr()
        masked = self.table * self.mask
        if self.training:
            return masked
        return masked * top_magnitude_mask(masked, self.nnz)  # what deploy() would keep

    @torch.no_grad()
    def dense_from_csr(self) -> torch.Tensor:
        """The table as the deployed CSR arrays hold it."""
        pointers = self.row_pointers.long()
        rows = torch.repeat_interleave(torch.arange(self.num_items, device=pointers.device),
                                       pointers[1:] - pointers[:-1])
        table = torch.zeros(self.num_items, self.dim, device=self.values.device)
        return table.index_put_((rows, self.columns.long()), self.values)

    @torch.no_grad()
    def start_epoch(self, epoch: int) -> dict[str, Any]:
        """Prune to the schedule's density for `epoch` (the mask only ever shrinks)."""
        if self.deployed:
            return {}
        target = scheduled_density(self.config.density, self.config.prune_epochs, epoch)
        keep = max(self.nnz, round(target * (self.num_items - 1) * self.dim))
        if keep < int(self.mask.sum()):
            self.mask.copy_(top_magnitude_mask(self.table * self.mask, keep))
            self.table.mul_(self.mask)
        return {"density": self.density()}

    @torch.no_grad()
    def deploy(self) -> None:
        """Keep exactly `nnz` entries (the largest |w|) and store them as CSR."""
        if self.deployed:
            return
        self.mask.copy_(top_magnitude_mask(self.table * self.mask, self.nnz))
        self.table.mul_(self.mask)
        rows, columns = self.mask.nonzero(as_tuple=True)  # row-major: CSR order
        self.values.copy_(self.table[rows, columns])
        self.columns.copy_(columns.to(self.columns.dtype))
        pointers = torch.zeros(self.num_items + 1, dtype=torch.long, device=rows.device)
        pointers[1:] = self.mask.sum(1).cumsum(0)
        self.row_pointers.copy_(pointers.to(self.row_pointers.dtype))
        self._set_deployed(True)

    def undeploy(self) -> None:
        """Back to the masked dense table (deploy() left it equal to the CSR arrays)."""
        self._set_deployed(False)

    def storage(self) -> StorageReport:
        return StorageReport(
            tensors=csr_tensors(self.num_items, self.dim, self.nnz),
            num_items=self.num_items, dim=self.dim,
            paper_ratio=self.num_items * self.dim / self.nnz,
            notes=(f"{self.nnz} of {(self.num_items - 1) * self.dim} entries kept "
                   f"(density {self.config.density:g}), CSR",))

    def inference_form(self, exportable: bool = False) -> "CSRForm":
        """The CSR arrays alone, at their stored types."""
        if not self.deployed:
            raise ValueError("prune has no inference form before deploy(): its entries are "
                             "not chosen yet")
        return CSRForm(self.values.detach().cpu().clone(), held_index(self.columns.cpu().clone()),
                       self.row_pointers.cpu().clone(), self.dim, exportable)


class CSRForm(InferenceForm):
    """A deployed pruned table: CSR values, columns (smallest unsigned type) and row pointers.

    A row is gathered from its CSR run: the id's up to `dim` positions from its row pointer,
    those past the run masked to zero, scattered to their columns. Eager scoring multiplies by
    a torch sparse CSR tensor built at load (indices widened once, as a phone app would);
    the `exportable` form (ONNX and ExecuTorch have no sparse tensors) widens the indices on
    every call and sums each row's terms from running sums (`csr_row_sums`); it holds its
    entries padded with zeros to whole blocks of `ROW_SUM_BLOCK`.
    """

    def __init__(self, values: torch.Tensor, columns: torch.Tensor, row_pointers: torch.Tensor,
                 dim: int, exportable: bool) -> None:
        super().__init__(None)
        self.num_items, self.dim = row_pointers.shape[0] - 1, dim
        self.nnz = values.shape[0]
        self.exportable = exportable
        if exportable:
            values, columns = (padded_to_blocks(t, ROW_SUM_BLOCK) for t in (values, columns))
        self.values = nn.Parameter(values, requires_grad=False)
        self.register_buffer("columns", columns)
        self.register_buffer("row_pointers", row_pointers)
        self.register_buffer("offsets", torch.arange(dim))
        if not exportable:
            self.register_buffer("wide_columns", widened(columns), persistent=False)
            self.register_buffer("wide_pointers", row_pointers.long(), persistent=False)
            with warnings.catch_warnings():  # torch's note that sparse CSR is in beta
                warnings.simplefilter("ignore", UserWarning)
                csr = torch.sparse_csr_tensor(self.wide_pointers, self.wide_columns, values,
                                              size=(self.num_items, dim))
            self.register_buffer("csr", csr, persistent=False)

    def _indices(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The columns and row pointers as int64, widened on every call in the exportable form."""
        if self.exportable:
            return widened(self.columns), self.row_pointers.long()
        return self.wide_columns, self.wide_pointers

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        pointers = self._indices()[1]
        start = pointers[ids].unsqueeze(-1)
        length = pointers[ids + 1].unsqueeze(-1) - start
        positions = (start + self.offsets).clamp(max=self.nnz - 1)
        inside = self.offsets < length
        values = self.values[positions] * inside.to(self.values.dtype)
        # a position past the run adds 0 to whatever column it names; the exportable form
        # widens only the columns it reads (all of them took 9 ms in ExecuTorch)
        if self.exportable:
            columns = widened(self.columns[positions])
        else:
            columns = self.wide_columns[positions]
        out = torch.zeros(ids.shape + (self.dim,), dtype=self.values.dtype, device=ids.device)
        return out.scatter_add(-1, columns, values)

    def score(self, query: torch.Tensor) -> torch.Tensor:
        if not self.exportable:
            return (self.csr @ query.t()).t()
        columns, pointers = self._indices()
        if self.gather_elements:
            entries = torch.gather(query, 1, columns.unsqueeze(0).expand(query.shape[0], -1))
        else:
            entries = query.index_select(1, columns)
        return csr_row_sums(entries * self.values, pointers, ROW_SUM_BLOCK)


ROW_SUM_BLOCK = 16


def padded_to_blocks(entries: torch.Tensor, block: int) -> torch.Tensor:
    """`entries` followed by zeros up to a whole number of `block`s, one zero at least."""
    blocks = entries.shape[0] // block + 1
    return torch.cat([entries, entries.new_zeros(blocks * block - entries.shape[0])])


def csr_row_sums(terms: torch.Tensor, pointers: torch.Tensor, block: int) -> torch.Tensor:
    """Each CSR row's sum of its entries' `terms` [B, P] -> [B, num_items], with no scatter:
    S(p), the sum of the terms before position p, read off at the row pointers, S(end) -
    S(start). P is whole `block`s, past the last pointer.

    ONNX Runtime and ExecuTorch add a scatter's elements one at a time (prune at 4x scored
    in 19 ms in ONNX Runtime through a scatter-add, 17x the dense model), and their cumulative
    sums are slow loops too. Here S(p) = (the sum of the blocks before p's: a float64
    cumulative sum, one element per block) + (the terms before p inside its block: a product
    with a triangular matrix of ones, float32, which both runtimes run as a matrix product).
    A row's error is then float32's rounding over a few blocks, as a dense dot product's is
    over its own terms; a float32 running sum of all the entries would make each row a
    difference of two sums of up to a million terms.
    """
    batch = terms.shape[0]
    blocks = terms.view(batch, -1, block)
    upper = torch.ones(block, block, dtype=terms.dtype, device=terms.device).triu()
    inclusive = blocks @ upper  # [B, blocks, block]: the running sum inside each block
    totals = inclusive[:, :, -1].double()
    before_block = totals.cumsum(1) - totals  # [B, blocks], float64
    exclusive = (inclusive - blocks).view(batch, -1)
    running = (before_block.index_select(1, pointers // block)
               + exclusive.index_select(1, pointers).double())  # S at every row pointer
    return (running[:, 1:] - running[:, :-1]).to(terms.dtype)


def prune_budget(config: PruneConfig, num_items: int, dim: int, ratio: float) -> PruneConfig:
    """The largest density whose CSR bytes (values, columns, row pointers) meet `ratio`."""
    full, total = num_items * dim * 4, (num_items - 1) * dim
    per_entry = 4 + smallest_unsigned_dtype(dim - 1).itemsize
    most = min(total - 1, math.floor((full / ratio - (num_items + 1) * 4) / per_entry))
    candidates = range(max(1, most - 2), max(1, most) + 1)

    def table_bytes(nnz: int) -> int:
        return sum(t.nbytes for t in csr_tensors(num_items, dim, nnz))

    nnz = largest_meeting(candidates, table_bytes, full, ratio, "prune")
    return PruneConfig(density=nnz / total, prune_epochs=config.prune_epochs)


@registry.register("prune", config=PruneConfig, budget=prune_budget,
                   description="magnitude pruning to --density (Zhu & Gupta 2017 cubic "
                               "schedule), deployed as CSR")
def build_prune(config: PruneConfig, *, num_items: int, dim: int) -> PrunedTable:
    return PrunedTable(num_items, dim, config)

