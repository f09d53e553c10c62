"""`sttd`: OD-Rec's semi-tensor-product tensor-train table (the paper's Section 3.2.2, Eq. 4-8).

With M_k = I_k J_k, the cores are G_1 in R^{M_1 x R}, G_k in R^{R/n x M_k/n x R} (1 < k < d) and
G_d in R^{R/n x M_d/n}, and X = G_1 x G_2 x ... x G_d (Eq. 7) with the left semi-tensor product
A x B = A (B kron I_n) (Eq. 4-6), which only asks the inner dimensions to be proportional.
X is indexed by ((i_1, j_1), ..., (i_d, j_d)) and rearranged into the [items, dim] table.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import nn

from ecbench.compressors import registry
from ecbench.compressors.budget import largest_meeting
from ecbench.compressors.base import Compressor, StorageReport, StoredTensor
from ecbench.compressors.factorize import parse_factors
from ecbench.compressors.tt import TARGET_STD, resolve_shapes


@dataclass
class STTDConfig:
    rank: int = 128  # R
    stp: int = 4  # n, the semi-tensor-product factor
    cores: int = 3
    item_factors: str = ""
    dim_factors: str = ""

    def __post_init__(self) -> None:
        if self.rank < 1 or self.stp < 1:
            raise ValueError(f"--rank and --stp must be positive, got {self.rank} and {self.stp}")
        if self.rank % self.stp:
            raise ValueError(f"--stp {self.stp} must divide --rank {self.rank}")
        if self.cores not in (2, 3):
            raise ValueError(f"--cores must be 2 or 3, got {self.cores}")
        parse_factors(self.item_factors, "--item-factors")
        parse_factors(self.dim_factors, "--dim-factors")


def semi_tensor_product(a: torch.Tensor, b: torch.Tensor, n: int) -> torch.Tensor:
    """Left STP of A [H, p*n] and B [p, Q]: C [H, Q*n], block (h, q) = sum_i a_h^i b_iq (Eq. 4-6)."""
    rows, cols = a.shape
    p = cols // n
    return torch.einsum("hit,iq->hqt", a.view(rows, p, n), b).reshape(rows, b.shape[1] * n)


def eq8_ratio(items: list[int], dims: list[int], rank: int, n: int,
              num_items: int | None = None) -> float:
    """The compression rate of Eq. 8 (its middle sum taken over the middle cores). Its numerator
    is the table the cores stand for: the real `num_items` rows where given, not the padded
    product of the item factors (which would credit the padding as compression)."""
    m = [i * j for i, j in zip(items, dims)]
    stored = m[0] * rank + sum(mk * rank ** 2 / n ** 2 for mk in m[1:-1]) + m[-1] * rank / n ** 2
    table = math.prod(m) if num_items is None else num_items * math.prod(dims)
    return table / stored


def sttd_core_shapes(modes: list[int], rank: int, n: int) -> list[tuple[int, ...]]:
    """G_1 [M_1, R], G_k [R/n, M_k/n, R], G_d [R/n, M_d/n]   (Section 3.2.2)."""
    return ([(modes[0], rank)] + [(rank // n, m // n, rank) for m in modes[1:-1]]
            + [(rank // n, modes[-1] // n)])


def sttd_budget(config: STTDConfig, num_items: int, dim: int, ratio: float) -> STTDConfig:
    """The largest rank R (a multiple of n) whose cores still meet the byte ratio."""
    items, dims = resolve_shapes(num_items, dim, config.cores, config.item_factors,
                                 config.dim_factors)
    modes = [i * j for i, j in zip(items, dims)]
    rank = largest_meeting(
        range(config.stp, 4097, config.stp),
        lambda r: 4 * sum(math.prod(s) for s in sttd_core_shapes(modes, r, config.stp)),
        num_items * dim * 4, ratio, f"sttd with n={config.stp}")
    return dataclasses.replace(config, rank=rank)


class STTDTable(Compressor):
    def __init__(self, num_items: int, dim: int, config: STTDConfig) -> None:
        super().__init__(num_items, dim)
        self.item_factors, self.dim_factors = resolve_shapes(
            num_items, dim, config.cores, config.item_factors, config.dim_factors)
        self.rank, self.n = config.rank, config.stp
        modes = [i * j for i, j in zip(self.item_factors, self.dim_factors)]
        for k, m in enumerate(modes[1:], start=2):
            if m % self.n:
                raise ValueError(f"--stp {self.n} must divide I_{k} * J_{k} = {m} "
                                 f"(items {self.item_factors}, dim {self.dim_factors})")
        shapes = sttd_core_shapes(modes, self.rank, self.n)
        self.stp_cores = nn.ParameterList(nn.Parameter(torch.empty(s)) for s in shapes)
        self.register_buffer("row_mask", (torch.arange(num_items) > 0).float().unsqueeze(1),
                             persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # An entry of X sums R/n products per contraction; scale so entries have the paper's spread.
        d = len(self.stp_cores)
        terms = (self.rank // self.n) ** (d - 1)
        std = (TARGET_STD ** 2 / terms) ** (1.0 / (2 * d))
        with torch.no_grad():
            for core in self.stp_cores:
                core.normal_(0.0, std)

    def full_tensor(self) -> torch.Tensor:
        """X of Eq. 7 as a matrix [M_1 ... M_{d-1}, M_d]."""
        r, n = self.rank, self.n
        x = self.stp_cores[0]
        for core in list(self.stp_cores)[1:-1]:
            rows = x.shape[0]
            m_over_n = core.shape[1]
            y = semi_tensor_product(x, core.reshape(r // n, m_over_n * r), n)
            # columns are (c, r, t) with mode index m = c * n + t; move r last, fold m into rows
            x = y.view(rows, m_over_n, r, n).permute(0, 1, 3, 2).reshape(rows * m_over_n * n, r)
        return semi_tensor_product(x, self.stp_cores[-1], n)

    def weight(self) -> torch.Tensor:
        d = len(self.item_factors)
        x = self.full_tensor().reshape(
            [f for k in range(d) for f in (self.item_factors[k], self.dim_factors[k])])
        table = x.permute(*range(0, 2 * d, 2), *range(1, 2 * d, 2)).reshape(-1, self.dim)
        return table[: self.num_items] * self.row_mask

    def storage(self) -> StorageReport:
        tensors = tuple(StoredTensor(f"stp_core_{k}", tuple(core.shape), "float32")
                        for k, core in enumerate(self.stp_cores))
        return StorageReport(
            tensors, self.num_items, self.dim,
            paper_ratio=eq8_ratio(self.item_factors, self.dim_factors, self.rank, self.n,
                                  num_items=self.num_items),
            notes=(f"items padded to {'x'.join(map(str, self.item_factors))}, dim "
                   f"{'x'.join(map(str, self.dim_factors))}, R={self.rank}, n={self.n}; "
                   "Eq. 8 over the real item rows",))


@registry.register("sttd", config=STTDConfig, budget=sttd_budget,
                   description="semi-tensor-product tensor-train table (OD-Rec, Eq. 4-8)")
def build_sttd(config: STTDConfig, *, num_items: int, dim: int) -> STTDTable:
    return STTDTable(num_items, dim, config)
