"""Example ecbench compressor plugin (the worked example of CONTRIBUTING.md)."""

from dataclasses import dataclass

import torch
from torch import nn

from ecbench import compressors
from ecbench.compressors import Compressor, StorageReport, StoredTensor


@dataclass
class LowRankConfig:
    rank: int = 8

    def __post_init__(self):
        if self.rank < 1:
            raise ValueError(f"rank must be positive, got {self.rank}")


class LowRankTable(Compressor):
    def __init__(self, num_items: int, dim: int, rank: int):
        super().__init__(num_items, dim)
        self.left = nn.Parameter(torch.empty(num_items, rank).uniform_(-0.1, 0.1))
        self.right = nn.Parameter(torch.empty(rank, dim).uniform_(-0.1, 0.1))

    def weight(self) -> torch.Tensor:
        table = self.left @ self.right
        return torch.cat([torch.zeros_like(table[:1]), table[1:]])  # row 0 stays zero

    def storage(self) -> StorageReport:
        r = self.right.shape[0]
        return StorageReport(
            tensors=(StoredTensor("left", (self.num_items, r), "float32"),
                     StoredTensor("right", (r, self.dim), "float32")),
            num_items=self.num_items, dim=self.dim,
            paper_ratio=self.num_items * self.dim / (r * (self.num_items + self.dim)))


@compressors.registry.register("lowrank", config=LowRankConfig, description="low-rank table")
def build_lowrank(config: LowRankConfig, *, num_items: int, dim: int) -> LowRankTable:
    return LowRankTable(num_items, dim, config.rank)
