"""`mixed-dim`: mixed-dimension embeddings by popularity (Ginart et al., ISIT 2021,
arXiv:1909.11810).

Items ranked by their training count (most frequent first, ties by id) are split into `blocks`
blocks of geometric sizes: block b holds n_b ~ n_0 g^b items (g = `block_growth`), so the top
block is the smallest. Block b stores its own table [n_b, d_b] and, when d_b < dim, a
projection [d_b, dim] up to the model's dimension: e_v = E_b[row] P_b.

Dimensions follow the paper's power-law rule d_b ~ p_b^alpha, p_b the popularity of an item of
block b, with the top block at full dimension. Under Zipf's law (an item's popularity falls as
1 / rank), an item of a geometric block spanning ranks [a, g a) has mean popularity
ln(g) / ((g - 1) a), proportional to 1 / n_b; so d_b = dim (n_0 / n_b)^alpha, rounded and
clamped to [min_dim, dim]: the rule of the paper's reference implementation (`alpha_power_rule`
with d0, n the block's rows). alpha = 0 gives every block the full dimension; larger alpha
shrinks the rare blocks faster. The sizes follow from the options and the item count alone;
which item sits in which row is the `rank` buffer (id -> popularity rank), set from the
training counts by `init_from_counts` (until then, rank = id) and saved with the model.

Stored (all counted): the block tables and projections (float32), the id -> rank map in the
smallest unsigned type holding num_items - 1, and the block boundaries. Scoring never builds
the table: block b scores (q P_b^T) E_b^T, and the ranks put the columns back in id order.
`--ratio` raises alpha (the dimensions of all but the top block shrink) to the smallest value
on a 0.01 grid whose bytes meet the ratio.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ecbench.compressors import registry
from ecbench.compressors.base import (Compressor, InferenceForm, StorageReport, StoredTensor,
                                      dense_scores, held_index, items_by_count,
                                      smallest_unsigned_dtype, widened)
from ecbench.compressors.budget import largest_meeting

ALPHA_GRID = 0.01  # the budget's step in alpha
ALPHA_MAX = 10.0  # the budget's largest alpha (every rare block at min_dim well before)


@dataclass
class MixedDimConfig:
    blocks: int = 4  # popularity blocks
    block_growth: float = 4.0  # each block holds this many times the items of the one before
    alpha: float = 0.5  # temperature of the power law d_b ~ popularity^alpha (0: all full dim)
    min_dim: int = 1  # no block narrower than this

    def __post_init__(self) -> None:
        if self.blocks < 2:
            raise ValueError(f"--blocks must be at least 2 (one block is the dense table), "
                             f"got {self.blocks}")
        if not self.block_growth > 1.0:
            raise ValueError(f"--block-growth must be greater than 1 (blocks grow "
                             f"geometrically), got {self.block_growth}")
        if self.alpha < 0:
            raise ValueError(f"--alpha must be non-negative, got {self.alpha}")
        if self.min_dim < 1:
            raise ValueError(f"--min-dim must be at least 1, got {self.min_dim}")


def block_bounds(num_items: int, blocks: int, growth: float) -> list[int]:
    """Rank boundaries [0, ..., num_items - 1]: block b holds ranks bounds[b] + 1 ..
    bounds[b + 1] (rank 0 is padding), sizes proportional to growth^b."""
    real = num_items - 1
    total = growth ** blocks - 1.0
    bounds = [round(real * (growth ** b - 1.0) / total) for b in range(blocks)] + [real]
    if any(lo >= hi for lo, hi in zip(bounds, bounds[1:])):
        raise ValueError(f"{real} items are too few for {blocks} blocks growing x{growth:g}: "
                         f"a block would be empty (sizes {np.diff(bounds).tolist()})")
    return bounds


def block_dims(bounds: list[int], dim: int, alpha: float, min_dim: int) -> list[int]:
    """d_b = dim (n_0 / n_b)^alpha, rounded, in [min_dim, dim]; the top block at full dim."""
    sizes = np.diff(bounds)
    return [dim] + [int(min(dim, max(min_dim, round(dim * (sizes[0] / n) ** alpha))))
                    for n in sizes[1:]]


def mixed_dim_tensors(num_items: int, dim: int, bounds: list[int], dims: list[int]
                      ) -> tuple[StoredTensor, ...]:
    """What the deployed table stores: block tables, projections, id -> rank, boundaries."""
    sizes = np.diff(bounds)
    tensors = [StoredTensor(f"table_{b}", (int(n), d), "float32")
               for b, (n, d) in enumerate(zip(sizes, dims))]
    tensors += [StoredTensor(f"projection_{b}", (d, dim), "float32")
                for b, d in enumerate(dims) if d < dim]
    tensors += [StoredTensor("rank", (num_items,), smallest_unsigned_dtype(num_items - 1).name),
                StoredTensor("block_bounds", (len(bounds),), "int32")]
    return tuple(tensors)


class _BlockMaths:
    """Rows and scores from the block tables; shared by the table and its inference form.

    Needs `tables` (one [n_b, d_b] per block), `projections` (one [d_b, dim] per block narrower
    than dim), `projection_of` (block -> index into `projections`, or None), `bounds`, `dim`.
    """

    tables: nn.ParameterList
    projections: nn.ParameterList
    projection_of: list[int | None]
    bounds: list[int]
    dim: int

    def _product(self, query: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        """query @ table.T; training takes `dense_scores` (a contiguous table gradient)."""
        return dense_scores(query, table)

    def _block_vectors(self, b: int, rows: torch.Tensor) -> torch.Tensor:
        vectors = F.embedding(rows, self.tables[b])
        p = self.projection_of[b]
        return vectors if p is None else vectors @ self.projections[p]

    def rows_by_rank(self, rank: torch.Tensor) -> torch.Tensor:
        """The vectors of items of popularity rank `rank` (0: padding, the zero vector)."""
        out = torch.zeros(rank.shape + (self.dim,), dtype=self.tables[0].dtype,
                          device=rank.device)
        for b in range(len(self.tables)):  # a few blocks: each looks up every id, keeps its own
            lo, hi = self.bounds[b], self.bounds[b + 1]
            inside = ((rank > lo) & (rank <= hi)).unsqueeze(-1)
            vectors = self._block_vectors(b, (rank - (lo + 1)).clamp(0, hi - lo - 1))
            out = torch.where(inside, vectors, out)
        return out

    def scores_by_rank(self, query: torch.Tensor) -> torch.Tensor:
        """[B, num_items] scores in rank order (column 0, padding, zero): (q P_b^T) E_b^T."""
        parts = [query.new_zeros(query.shape[0], 1)]
        for b in range(len(self.tables)):
            p = self.projection_of[b]
            reduced = query if p is None else query @ self.projections[p].t()
            parts.append(self._product(reduced, self.tables[b]))
        return torch.cat(parts, 1)

    def table_by_rank(self) -> torch.Tensor:
        """The whole table in rank order, row 0 zero."""
        blocks = [self.tables[0].new_zeros(1, self.dim)]
        for b in range(len(self.tables)):
            p = self.projection_of[b]
            blocks.append(self.tables[b] if p is None else self.tables[b] @ self.projections[p])
        return torch.cat(blocks, 0)


class MixedDimTable(_BlockMaths, Compressor):
    def __init__(self, num_items: int, dim: int, config: MixedDimConfig) -> None:
        Compressor.__init__(self, num_items, dim)
        if config.min_dim > dim:
            raise ValueError(f"--min-dim {config.min_dim} exceeds dim {dim}")
        self.config = config
        self.bounds = block_bounds(num_items, config.blocks, config.block_growth)
        self.dims = block_dims(self.bounds, dim, config.alpha, config.min_dim)
        sizes = np.diff(self.bounds).tolist()
        self.tables = nn.ParameterList(
            [nn.Parameter(torch.empty(n, d).uniform_(-0.1, 0.1)) for n, d in zip(sizes, self.dims)])
        self.projections = nn.ParameterList()
        self.projection_of: list[int | None] = []
        for d in self.dims:
            if d == dim:
                self.projection_of.append(None)
                continue
            # orthonormal rows scaled so a projected row has the full table's spread
            q, _ = torch.linalg.qr(torch.randn(dim, d))
            self.projection_of.append(len(self.projections))
            self.projections.append(nn.Parameter(math.sqrt(dim / d) * q.t().contiguous()))
        # item id -> popularity rank (0: padding); identity until init_from_counts
        self.register_buffer("rank", torch.arange(num_items))

    def uses_item_counts(self) -> bool:
        return True

    @torch.no_grad()
    def init_from_counts(self, counts: torch.Tensor) -> None:
        """Rank the real items by count, most frequent first, ties by id."""
        order = items_by_count(counts, self.num_items)
        rank = np.zeros(self.num_items, dtype=np.int64)
        rank[order] = np.arange(1, self.num_items)
        self.rank.copy_(torch.from_numpy(rank))

    def weight(self) -> torch.Tensor:
        return self.table_by_rank()[self.rank]

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.rows_by_rank(self.rank[ids])

    def score(self, query: torch.Tensor) -> torch.Tensor:
        if query.dim() != 2:
            return super().score(query)
        return self.scores_by_rank(query).index_select(1, self.rank)

    def storage(self) -> StorageReport:
        tensors = mixed_dim_tensors(self.num_items, self.dim, self.bounds, self.dims)
        numbers = sum(math.prod(t.shape) for t in tensors if t.dtype == "float32")
        sizes = np.diff(self.bounds).tolist()
        return StorageReport(
            tensors=tensors, num_items=self.num_items, dim=self.dim,
            paper_ratio=self.num_items * self.dim / numbers,
            notes=(f"blocks of {sizes} items at dims {self.dims}",))

    def inference_form(self, exportable: bool = False) -> "MixedDimForm":
        rank = self.rank.cpu().numpy().astype(smallest_unsigned_dtype(self.num_items - 1))
        return MixedDimForm(self, held_index(rank), exportable)


class MixedDimForm(_BlockMaths, InferenceForm):
    """A deployed mixed-dimension table: block tables, projections and the id -> rank map in its
    stored type (widened once at load for eager, on every call when `exportable`)."""

    def __init__(self, table: MixedDimTable, rank: torch.Tensor, exportable: bool) -> None:
        InferenceForm.__init__(self, None)
        self.num_items, self.dim = table.num_items, table.dim
        self.bounds, self.projection_of = list(table.bounds), list(table.projection_of)
        self.exportable = exportable
        self.tables = nn.ParameterList([nn.Parameter(t.detach().cpu().clone(), requires_grad=False)
                                        for t in table.tables])
        self.projections = nn.ParameterList(
            [nn.Parameter(p.detach().cpu().clone(), requires_grad=False)
             for p in table.projections])
        self.register_buffer("rank", rank)
        if not exportable:
            self.register_buffer("wide_rank", widened(rank), persistent=False)

    def _product(self, query: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        return query @ table.t()  # plain ops only: the form is traced and exported

    def _rank(self) -> torch.Tensor:
        return widened(self.rank) if self.exportable else self.wide_rank

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.rows_by_rank(self._rank()[ids])

    def score(self, query: torch.Tensor) -> torch.Tensor:
        return self.scores_by_rank(query).index_select(1, self._rank())


def mixed_dim_budget(config: MixedDimConfig, num_items: int, dim: int, ratio: float
                     ) -> MixedDimConfig:
    """The smallest alpha (on a 0.01 grid; the widest blocks) whose bytes meet `ratio`."""
    bounds = block_bounds(num_items, config.blocks, config.block_growth)
    steps = round(ALPHA_MAX / ALPHA_GRID)
    alphas = [round(s * ALPHA_GRID, 2) for s in range(steps, -1, -1)]  # growing tables

    def table_bytes(alpha: float) -> int:
        dims = block_dims(bounds, dim, alpha, config.min_dim)
        return sum(t.nbytes for t in mixed_dim_tensors(num_items, dim, bounds, dims))

    alpha = largest_meeting(alphas, table_bytes, num_items * dim * 4, ratio,
                            f"mixed-dim with {config.blocks} blocks growing "
                            f"x{config.block_growth:g} and --min-dim {config.min_dim}")
    return dataclasses.replace(config, alpha=alpha)


@registry.register("mixed-dim", config=MixedDimConfig, budget=mixed_dim_budget,
                   description="mixed-dimension embeddings by popularity block, d ~ p^alpha "
                               "(Ginart et al. 2021)")
def build_mixed_dim(config: MixedDimConfig, *, num_items: int, dim: int) -> MixedDimTable:
    return MixedDimTable(num_items, dim, config)
