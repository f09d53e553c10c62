"""`tt`: a tensor-train item table in the TT-Rec style (Yin et al. 2021), pure PyTorch.

The item count is padded up to I_1 * ... * I_d and the dimension factored as J_1 * ... * J_d.
Core k has shape [R_{k-1}, I_k, J_k, R_k] (R_0 = R_d = 1); the row of item i, with mixed-radix
digits (i_1, ..., i_d), is the chain product of the slices G_k[:, i_k].
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from ecbench.compressors import registry
from ecbench.compressors.budget import largest_meeting
from ecbench.compressors.base import Compressor, StorageReport, StoredTensor
from ecbench.compressors.factorize import balanced_factors, covering_factors, parse_factors

TARGET_STD = 0.1 / math.sqrt(3.0)  # the std of U(-0.1, 0.1), the paper's initialisation


@dataclass
class TTConfig:
    rank: int = 16
    cores: int = 3
    item_factors: str = ""  # e.g. "35x35x34"; empty: the smallest near-cube covering the items
    dim_factors: str = ""  # e.g. "4x4x8"; empty: balanced factors of dim
    init: Literal["random", "teacher"] = "random"  # teacher: TT-SVD of a trained table

    def __post_init__(self) -> None:
        if self.init not in ("random", "teacher"):
            raise ValueError(f"--init must be random or teacher, got {self.init!r}")
        if self.rank < 1:
            raise ValueError(f"--rank must be at least 1, got {self.rank}")
        if self.cores not in (2, 3):
            raise ValueError(f"--cores must be 2 or 3, got {self.cores}")
        parse_factors(self.item_factors, "--item-factors")
        parse_factors(self.dim_factors, "--dim-factors")


def resolve_shapes(num_items: int, dim: int, cores: int, item_factors: str, dim_factors: str
                   ) -> tuple[list[int], list[int]]:
    items = parse_factors(item_factors, "--item-factors") or covering_factors(num_items, cores)
    dims = parse_factors(dim_factors, "--dim-factors") or balanced_factors(dim, cores)
    if len(items) != cores or len(dims) != cores:
        raise ValueError(f"need {cores} item and dim factors, got {items} and {dims}")
    if math.prod(items) < num_items:
        raise ValueError(f"item factors {items} cover {math.prod(items)} < {num_items} items")
    if math.prod(dims) != dim:
        raise ValueError(f"dim factors {dims} multiply to {math.prod(dims)}, not dim {dim}")
    return items, dims


def tt_core_shapes(items: list[int], dims: list[int], rank: int) -> list[tuple[int, ...]]:
    ranks = [1] + [rank] * (len(items) - 1) + [1]
    return [(ranks[k], items[k], dims[k], ranks[k + 1]) for k in range(len(items))]


def tt_budget(config: TTConfig, num_items: int, dim: int, ratio: float) -> TTConfig:
    """The largest TT rank whose cores still meet the byte ratio."""
    items, dims = resolve_shapes(num_items, dim, config.cores, config.item_factors,
                                 config.dim_factors)
    rank = largest_meeting(
        range(1, 1025), lambda r: 4 * sum(math.prod(s) for s in tt_core_shapes(items, dims, r)),
        num_items * dim * 4, ratio, f"tt with {config.cores} cores")
    return dataclasses.replace(config, rank=rank)


def mixed_radix_digits(ids: torch.Tensor, radices: list[int]) -> list[torch.Tensor]:
    """Digits of `ids` in the mixed radix `radices`, most significant first."""
    digits = []
    rest = ids
    for base in reversed(radices):
        digits.append(rest % base)
        rest = torch.div(rest, base, rounding_mode="floor")
    return digits[::-1]


class TTTable(Compressor):
    def __init__(self, num_items: int, dim: int, config: TTConfig) -> None:
        super().__init__(num_items, dim)
        self.item_factors, self.dim_factors = resolve_shapes(
            num_items, dim, config.cores, config.item_factors, config.dim_factors)
        shapes = tt_core_shapes(self.item_factors, self.dim_factors, config.rank)
        self.ranks = [s[0] for s in shapes] + [1]
        self.tt_cores = nn.ParameterList(nn.Parameter(torch.empty(s)) for s in shapes)
        self.register_buffer("row_mask", (torch.arange(num_items) > 0).float().unsqueeze(1),
                             persistent=False)
        self.init = config.init
        self.reset_parameters()

    def uses_teacher(self) -> bool:
        return self.init == "teacher"

    def reset_parameters(self) -> None:
        """Gaussian cores scaled so reconstructed entries have the paper's initial spread."""
        inner = math.prod(self.ranks[1:-1])
        std = (TARGET_STD ** 2 / inner) ** (1.0 / (2 * len(self.tt_cores)))
        with torch.no_grad():
            for core in self.tt_cores:
                core.normal_(0.0, std)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        flat = ids.reshape(-1)
        digits = mixed_radix_digits(flat, self.item_factors)
        x = self.tt_cores[0][0].index_select(0, digits[0])  # [n, J_1, R_1]
        for core, digit in zip(list(self.tt_cores)[1:], digits[1:]):
            # the item axis first before the gather, and a batched product: the count n stays
            # the leading axis of every tensor (n may be data-dependent, such as a session's
            # real items, and ExecuTorch cannot order strides that hold it)
            g = core.permute(1, 0, 2, 3).index_select(0, digit)  # [n, R_{k-1}, J_k, R_k]
            joint = torch.bmm(x, g.flatten(2))  # [n, J_1..J_{k-1}, J_k R_k]
            x = joint.unflatten(2, (core.shape[2], core.shape[3])).flatten(1, 2)
        rows = x.squeeze(-1) * (flat > 0).unsqueeze(1).to(x.dtype)
        return rows.view(*ids.shape, self.dim)

    def weight(self) -> torch.Tensor:
        x = self.tt_cores[0][0]  # [I_1, J_1, R_1]
        for core in list(self.tt_cores)[1:]:
            rows, cols, rank = x.shape
            x = torch.einsum("apr,rbqs->abpqs", x, core).reshape(
                rows * core.shape[1], cols * core.shape[2], core.shape[3])
        return x.squeeze(-1)[: self.num_items] * self.row_mask

    @torch.no_grad()
    def init_from_table(self, table: torch.Tensor) -> None:
        """TT-SVD of a trained table (tensorly), truncated to this table's ranks."""
        from tensorly.decomposition import tensor_train

        d = len(self.tt_cores)
        padded = table.new_zeros(math.prod(self.item_factors), self.dim)
        padded[: self.num_items] = table
        tensor = padded.reshape(*self.item_factors, *self.dim_factors)
        tensor = tensor.permute(*[i for k in range(d) for i in (k, d + k)]).reshape(
            [self.item_factors[k] * self.dim_factors[k] for k in range(d)])
        factors = tensor_train(tensor.double().cpu().numpy(), rank=self.ranks).factors
        for core, factor in zip(self.tt_cores, factors):
            f = torch.as_tensor(factor, dtype=core.dtype, device=core.device)
            core.zero_()
            core[: f.shape[0], ..., : f.shape[2]] = f.reshape(
                f.shape[0], core.shape[1], core.shape[2], f.shape[2])

    def storage(self) -> StorageReport:
        tensors = tuple(StoredTensor(f"tt_core_{k}", tuple(core.shape), "float32")
                        for k, core in enumerate(self.tt_cores))
        stored = sum(core.numel() for core in self.tt_cores)
        return StorageReport(tensors, self.num_items, self.dim,
                             paper_ratio=self.num_items * self.dim / stored,
                             notes=(f"items padded to {'x'.join(map(str, self.item_factors))}, "
                                    f"dim {'x'.join(map(str, self.dim_factors))}, "
                                    f"ranks {self.ranks}",))


@registry.register("tt", config=TTConfig, budget=tt_budget,
                   description="tensor-train table (TT-Rec style)")
def build_tt(config: TTConfig, *, num_items: int, dim: int) -> TTTable:
    return TTTable(num_items, dim, config)
