"""`pq`: product quantisation of the item table with fixed codes (RecJPQ-style).

The `dim` columns are split into `groups` sub-spaces of `dim / groups` columns. Each item has
one code per sub-space, and its row is the concatenation of the codewords its codes pick from
the sub-codebooks, e_v = [B_1(c_v^1), ..., B_G(c_v^G)] (Petrov & Macdonald, "RecJPQ", WSDM
2024). As in RecJPQ the codes are assigned once, before training, and stay fixed while the
sub-codebooks [groups, K, dim / groups] learn with the model; unlike RecJPQ, which assigns codes
from a truncated SVD of the user-item matrix, the codes here come from k-means on each
sub-space of a trained teacher table (`init_from_table`), which starts the codebooks at the
centroids. Until then every item has a seeded random code, so the table is valid (for timing,
`deploy_untrained`) at any point.

Scoring is exact and cheap: a session's query meets each sub-codebook once ([groups, K] dot
products of dim / groups columns), and an item's score is the sum of its `groups` entries of
that lookup table: groups * K * dim / groups multiplications and num_items * groups additions
instead of num_items * dim multiplications. The codes are stored in the smallest unsigned type
that holds K - 1 (uint8 for K <= 256).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ecbench.compressors import registry
from ecbench.compressors.base import (Compressor, StorageReport, StoredTensor, dense_scores,
                                      held_index, smallest_unsigned_dtype)
from ecbench.compressors.budget import largest_meeting
from ecbench.compressors.code_learning import balanced_random_codes
from ecbench.compressors.codewords import CodeLookupForm, code_lookup_scores, codeword_sum

KMEANS_ITERATIONS = 20  # Lloyd iterations per sub-space after k-means++ seeding
ASSIGN_CHUNK_VALUES = 1 << 24  # distances computed at once while assigning (64 MiB of float32)


@dataclass
class PQConfig:
    groups: int = 8  # sub-spaces (codes per item); must divide dim
    K: int = 256  # codewords per sub-codebook

    def __post_init__(self) -> None:
        if self.groups < 1:
            raise ValueError(f"--groups must be at least 1, got {self.groups}")
        if self.K < 2:
            raise ValueError(f"--K must be at least 2, got {self.K}")


def torch_dtype(dtype: np.dtype) -> torch.dtype:
    """The torch type of a numpy integer type (`smallest_unsigned_dtype`'s answer)."""
    return torch.from_numpy(np.zeros(0, dtype=dtype)).dtype


def pq_tensors(num_items: int, dim: int, groups: int, K: int) -> tuple[StoredTensor, ...]:
    """What the deployed table stores: the codes, in the smallest unsigned type holding K - 1,
    and the float32 sub-codebooks."""
    return (StoredTensor("codes", (num_items, groups), smallest_unsigned_dtype(K - 1).name),
            StoredTensor("codebooks", (groups, K, dim // groups), "float32"))


def pq_paper_ratio(num_items: int, dim: int, groups: int, K: int) -> float:
    """Numbers of the dense table over numbers stored: N dim / (N groups + groups K dim/groups)."""
    return num_items * dim / (num_items * groups + groups * K * (dim // groups))


def subspace_lookup_tables(codebooks: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    """LUT[g K + k, b] = q_b[g-th sub-space] . B_g(k), [groups K, B], from the sub-codebooks
    [groups, K, dim / groups] and the queries [B, dim]."""
    groups, k, sub_dim = codebooks.shape
    sub_query = query.reshape(-1, groups, sub_dim).permute(1, 2, 0)  # [G, d, B]
    return torch.matmul(codebooks, sub_query).reshape(groups * k, -1)


def _squared_distances(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """||x_i - c_k||^2, [n, k], by the expansion (one matrix product)."""
    d = (x.square().sum(1, keepdim=True) - 2 * x @ centroids.t()
         + centroids.square().sum(1).unsqueeze(0))
    return d.clamp_(min=0)


def nearest_centroids(x: torch.Tensor, centroids: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's nearest centroid and its squared distance. ||x||^2 does not change which
    centroid is nearest, so the [rows, k] part is one fused product (||c||^2 - 2 x.c), in
    chunks of rows that stay within ASSIGN_CHUNK_VALUES."""
    chunk = max(1, ASSIGN_CHUNK_VALUES // len(centroids))
    centroid_norms = centroids.square().sum(1).unsqueeze(0)
    labels, distances = [], []
    for start in range(0, len(x), chunk):
        rows = x[start:start + chunk]
        partial = torch.addmm(centroid_norms, rows, centroids.t(), alpha=-2)
        best, label = partial.min(1)
        labels.append(label)
        distances.append((best + rows.square().sum(1)).clamp_(min=0))
    return torch.cat(labels), torch.cat(distances)


def kmeans_pp(x: torch.Tensor, k: int, iterations: int, seed: int
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means of the rows of `x` [n, d] with k-means++ seeding: (centroids [k, d],
    labels [n], each row's nearest centroid). Seeded and deterministic on a device. A cluster
    left empty by an iteration is reseeded with the rows farthest from their centroids."""
    n = len(x)
    if not 1 <= k <= n:
        raise ValueError(f"k-means needs 1 <= k <= {n} rows, got k={k}")
    g = torch.Generator(device=x.device).manual_seed(seed)
    centroids = x.new_empty(k, x.shape[1])
    centroids[0] = x[torch.randint(n, (1,), generator=g, device=x.device)]
    closest = _squared_distances(x, centroids[:1])[:, 0]
    for j in range(1, k):  # a loop over the k seeds, each one pass over the rows
        cumulative = closest.double().cumsum(0)
        if cumulative[-1] > 0:  # D^2 sampling, by the inverse of the cumulative distribution
            u = torch.rand(1, generator=g, device=x.device, dtype=torch.float64) * cumulative[-1]
            pick = torch.searchsorted(cumulative, u, right=True).clamp_(max=n - 1)
        else:  # fewer distinct rows than seeds: any row
            pick = torch.randint(n, (1,), generator=g, device=x.device)
        centroids[j] = x[pick]
        closest = torch.minimum(closest, _squared_distances(x, centroids[j:j + 1])[:, 0])
    for _ in range(iterations):
        labels, distances = nearest_centroids(x, centroids)
        counts = torch.bincount(labels, minlength=k)
        sums = x.new_zeros(k, x.shape[1]).index_add_(0, labels, x)
        means = sums / counts.clamp(min=1).unsqueeze(1).to(x.dtype)
        centroids = torch.where((counts > 0).unsqueeze(1), means, centroids)
        empty = torch.nonzero(counts == 0).flatten()
        if len(empty):
            centroids[empty] = x[distances.topk(len(empty)).indices]
    return centroids, nearest_centroids(x, centroids)[0]


class ProductQuantizedTable(Compressor):
    def __init__(self, num_items: int, dim: int, config: PQConfig) -> None:
        super().__init__(num_items, dim)
        if dim % config.groups:
            raise ValueError(f"--groups {config.groups} must divide dim={dim} into equal "
                             "sub-spaces")
        if config.K > num_items - 1:
            raise ValueError(f"--K {config.K} exceeds the {num_items - 1} real items: k-means "
                             "cannot find more codewords than items")
        self.config = config
        self.groups, self.K, self.sub_dim = config.groups, config.K, dim // config.groups
        self.codebooks = nn.Parameter(
            torch.empty(self.groups, self.K, self.sub_dim).uniform_(-0.1, 0.1))
        # fixed codes, stored as deployed; seeded random (each codeword equally used) until
        # init_from_table assigns them by k-means
        codes = torch.zeros(num_items, self.groups,
                            dtype=torch_dtype(smallest_unsigned_dtype(self.K - 1)))
        self.register_buffer("codes", codes)
        self._random_codes(seed=0)
        self.register_buffer("offsets", torch.arange(self.groups) * self.K, persistent=False)
        self.register_buffer("row_mask", (torch.arange(num_items) > 0).unsqueeze(1),
                             persistent=False)

    # -- codes ---------------------------------------------------------------------------------
    @torch.no_grad()
    def _random_codes(self, seed: int) -> None:
        codes = torch.stack([balanced_random_codes(self.num_items - 1, self.K, seed=seed + g)
                             for g in range(self.groups)], 1)
        self.codes[1:] = codes.to(self.codes.device)
        self.codes[0] = 0

    def uses_teacher(self) -> bool:
        return True

    @torch.no_grad()
    def init_from_table(self, table: torch.Tensor) -> None:
        """Codes by k-means (K centroids) on each sub-space of the teacher's real rows; the
        centroids become the sub-codebooks. Seeded: the same table gives the same codes."""
        if table.shape != (self.num_items, self.dim):
            raise ValueError(f"teacher table is {tuple(table.shape)}, expected "
                             f"{(self.num_items, self.dim)}: another dataset or dim")
        sub = table[1:].to(self.codebooks.device, torch.float32).reshape(
            self.num_items - 1, self.groups, self.sub_dim)
        for g in range(self.groups):  # a handful of sub-spaces, each vectorised over items
            centroids, labels = kmeans_pp(sub[:, g].contiguous(), self.K, KMEANS_ITERATIONS,
                                          seed=g)
            self.codebooks[g] = centroids
            self.codes[1:, g] = labels.to(self.codes.dtype)
        self.codes[0] = 0

    @torch.no_grad()
    def deploy_untrained(self, seed: int = 0) -> None:
        """Seeded random codes and codebooks: k-means would take long and not change timing."""
        self._random_codes(seed)
        g = torch.Generator().manual_seed(seed)
        self.codebooks.copy_(torch.rand(self.codebooks.shape, generator=g) * 0.2 - 0.1)
        self.deploy()

    def _index(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Codes widened and offset into the flat codebooks, [N, groups] and [groups, N];
        cached until the codes change."""
        stamp = (self.codes.data_ptr(), self.codes._version, self.codes.device)
        if getattr(self, "_index_stamp", None) != stamp:
            by_item = self.codes.long() + self.offsets
            self._index_cache = (by_item, by_item.t().contiguous())
            self._index_stamp = stamp
        return self._index_cache

    def _flat(self) -> torch.Tensor:
        return self.codebooks.reshape(self.groups * self.K, self.sub_dim)

    # -- the table -----------------------------------------------------------------------------
    def weight(self) -> torch.Tensor:
        by_item = self._index()[0]
        rows = self._flat().index_select(0, by_item.reshape(-1)).view(self.num_items, self.dim)
        return rows * self.row_mask.to(rows.dtype)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """The rows of `ids` alone, composed from their codes (no whole table)."""
        index = self._index()[0][ids]  # ids.shape + (groups,)
        rows = self._flat().index_select(0, index.reshape(-1)).view(ids.shape + (self.dim,))
        return rows * (ids > 0).unsqueeze(-1).to(rows.dtype)

    def lookup_tables(self, query: torch.Tensor) -> torch.Tensor:
        return subspace_lookup_tables(self.codebooks.to(query.dtype), query)

    def score(self, query: torch.Tensor) -> torch.Tensor:
        """Exact scores [B, N]: score[b, v] = sum_g LUT[g, c_v^g] (see the module's note)."""
        if query.dim() != 2:
            return dense_scores(query, self.current_weight())
        by_item, by_codebook = self._index()
        lut_t = self.lookup_tables(query)
        if not (torch.is_grad_enabled() and lut_t.requires_grad):
            return code_lookup_scores(lut_t, by_codebook, by_item)
        scores = codeword_sum(lut_t, by_item, by_codebook)  # [N, B], a cheap backward
        scores[:1].zero_()  # the padding item
        return scores.t()

    # -- deployment ----------------------------------------------------------------------------
    def inference_form(self, exportable: bool = False) -> "PQLookupForm":
        """Codes (as stored) and sub-codebooks only."""
        return PQLookupForm(held_index(self.codes.detach().cpu().clone()),
                            self.codebooks.detach().cpu().clone(), exportable)

    def storage(self) -> StorageReport:
        tensors = pq_tensors(self.num_items, self.dim, self.groups, self.K)
        code_bits = self.num_items * self.groups * math.ceil(math.log2(self.K))
        distinct = int(torch.unique(self.codes[1:].long(), dim=0).shape[0])
        notes = (
            f"{self.groups} sub-spaces of {self.sub_dim} columns, K={self.K} codewords each; "
            f"codes {tensors[0].dtype} [{self.num_items}, {self.groups}] (padding row included), "
            "codebooks float32",
            "paper ratio counts numbers (a code as one number, like a codebook float): "
            "N dim / (N groups + groups K dim/groups)",
            f"code collisions: {self.num_items - 1 - distinct} items have the code of another "
            "(pq codes are not made unique; such items tie)",
        )
        return StorageReport(
            tensors=tensors, num_items=self.num_items, dim=self.dim,
            paper_ratio=pq_paper_ratio(self.num_items, self.dim, self.groups, self.K),
            notes=notes, packed_bytes=math.ceil(code_bits / 8) + tensors[1].nbytes)


class PQLookupForm(CodeLookupForm):
    """A deployed pq table: the codes as stored (sub-space-major [groups, N]) and the
    sub-codebooks, never the [num_items, dim] table.

    Rows concatenate the codewords of the ids' codes; scoring is ccode's lookup-table scoring
    (`CodeLookupForm`: the codes widened once in the eager form, on every call in the
    exportable one) over tables that read each sub-codebook against its own sub-space of the
    query.
    """

    def __init__(self, codes: torch.Tensor, codebooks: torch.Tensor, exportable: bool) -> None:
        super().__init__(codes, codebooks, exportable)
        self.groups, self.sub_dim = self.M, codebooks.shape[2]
        self.dim = self.groups * self.sub_dim

    def join(self, codewords: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(codewords, -1)  # the sub-vectors side by side

    def lookup_tables(self, query: torch.Tensor) -> torch.Tensor:
        return subspace_lookup_tables(self.codebooks, query)


def pq_budget(config: PQConfig, num_items: int, dim: int, ratio: float) -> PQConfig:
    """The most sub-spaces (a divisor of dim; K as configured) whose bytes still meet `ratio`.

    Codebook bytes (K dim floats) do not depend on the number of sub-spaces, code bytes grow
    with it, so the largest divisor that meets the ratio is the most accurate table."""
    if config.K > num_items - 1:
        raise ValueError(f"--K {config.K} exceeds the {num_items - 1} real items: no pq table "
                         "of that K for this catalogue")
    divisors = [g for g in range(1, dim + 1) if dim % g == 0]
    try:
        groups = largest_meeting(
            divisors, lambda g: sum(t.nbytes for t in pq_tensors(num_items, dim, g, config.K)),
            num_items * dim * 4, ratio, f"pq with K={config.K}")
    except ValueError as exc:
        if ratio <= 0:
            raise
        raise ValueError(f"{exc}; the codebooks alone take K dim floats: a smaller --K "
                         "reaches further") from None
    return dataclasses.replace(config, groups=groups)


@registry.register("pq", config=PQConfig, budget=pq_budget,
                   description="product quantisation: fixed k-means codes per sub-space, "
                               "learned sub-codebooks (RecJPQ-style)")
def build_pq(config: PQConfig, *, num_items: int, dim: int) -> ProductQuantizedTable:
    return ProductQuantizedTable(num_items, dim, config)
