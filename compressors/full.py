"""`full`: the uncompressed item table, the teacher's and the reference for every ratio."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ecbench.compressors.base import Compressor, StorageReport, StoredTensor
from ecbench.compressors import registry


@dataclass
class FullConfig:
    """The dense table has no options of its own."""


class FullTable(Compressor):
    def __init__(self, num_items: int, dim: int, init_range: float = 0.1) -> None:
        super().__init__(num_items, dim)
        self.table = nn.Parameter(torch.empty(num_items, dim))
        self.init_range = init_range
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.table.uniform_(-self.init_range, self.init_range)
            self.table[0].zero_()

    def weight(self) -> torch.Tensor:
        return self.table

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        # padding_idx keeps row 0's gradient at zero, so the padding row stays the zero vector.
        return nn.functional.embedding(ids, self.table, padding_idx=0, sparse=True)

    def storage(self) -> StorageReport:
        return StorageReport(
            tensors=(StoredTensor("table", (self.num_items, self.dim), "float32"),),
            num_items=self.num_items, dim=self.dim, paper_ratio=1.0)


def full_budget(config: FullConfig, num_items: int, dim: int, ratio: float) -> FullConfig:
    if ratio > 1:
        raise ValueError(f"--ratio {ratio:g} is out of reach for full: the dense table is the "
                         "reference (byte ratio 1)")
    return config


@registry.register("full", config=FullConfig, description="uncompressed item table",
                   budget=full_budget)
def build_full(config: FullConfig, *, num_items: int, dim: int, init_range: float = 0.1) -> FullTable:
    return FullTable(num_items, dim, init_range)
