"""`hash` and `qr`: item tables that share rows between items by their ids alone.

`hash` is the hashing trick: item i reads row h(i) of a table of `buckets` rows, h a seeded
universal hash ((a i + b) mod p) mod buckets; with `--hashes 2` (double hashing) it sums the
rows of two such hashes, so two items rarely share both. `qr` is the quotient-remainder trick
(Shi et al., KDD 2020): item i combines row i // m of a quotient table with row i % m of a
remainder table of m rows, by product or sum, so no two items share both rows. Neither stores
anything per item: a phone computes the rows from the id, so the stored bytes are the tables
(and the hash's few parameters).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn

from ecbench.compressors import registry
from ecbench.compressors.base import Compressor, StorageReport, StoredTensor
from ecbench.compressors.budget import largest_meeting

HASH_PRIME = 2_147_483_647  # 2^31 - 1: a * id + b stays within int64 for any catalogue


@dataclass
class HashConfig:
    buckets: int = 0  # rows of the shared table; 0 = a tenth of the items
    hashes: int = 1  # 1: the hashing trick; 2: double hashing (two rows summed)
    hash_seed: int = 0  # draws the hash functions' parameters

    def __post_init__(self) -> None:
        if self.buckets < 0:
            raise ValueError(f"--buckets must be positive (or 0 for a tenth of the items), "
                             f"got {self.buckets}")
        if self.hashes not in (1, 2):
            raise ValueError(f"--hashes must be 1 or 2, got {self.hashes}")


def hash_params(hashes: int, seed: int) -> torch.Tensor:
    """(a, b) of each hash function, [hashes, 2] int64, a in [1, p), b in [0, p)."""
    rng = np.random.default_rng([seed, 0x5EED])
    a = rng.integers(1, HASH_PRIME, size=hashes)
    b = rng.integers(0, HASH_PRIME, size=hashes)
    return torch.from_numpy(np.stack([a, b], 1).astype(np.int64))


class HashedTable(Compressor):
    def __init__(self, num_items: int, dim: int, config: HashConfig) -> None:
        super().__init__(num_items, dim)
        self.config = config
        self.buckets = config.buckets or max(1, (num_items - 1) // 10)
        if self.buckets >= num_items - 1:
            raise ValueError(f"--buckets {self.buckets} must be fewer than the "
                             f"{num_items - 1} items: more rows than items compress nothing")
        self.table = nn.Parameter(torch.empty(self.buckets, dim))
        # scalars a phone keeps beside the table; stored with the model
        self.register_buffer("params", hash_params(config.hashes, config.hash_seed))
        with torch.no_grad():  # summed rows start at the full table's spread
            self.table.uniform_(-0.1 / math.sqrt(config.hashes), 0.1 / math.sqrt(config.hashes))

    def bucket_index(self, ids: torch.Tensor) -> torch.Tensor:
        """The rows of each id, [..., hashes]; computed from the id, nothing stored per item."""
        a, b = self.params[:, 0], self.params[:, 1]
        return torch.remainder(torch.remainder(ids.unsqueeze(-1) * a + b, HASH_PRIME),
                               self.buckets)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        rows = nn.functional.embedding(self.bucket_index(ids), self.table).sum(-2)
        return rows * (ids > 0).unsqueeze(-1).to(rows.dtype)

    def weight(self) -> torch.Tensor:
        return self.forward(torch.arange(self.num_items, device=self.table.device))

    def score(self, query: torch.Tensor) -> torch.Tensor:
        """Each bucket scored once ([B, buckets]), then gathered for every item: exact, and
        `buckets` instead of `num_items` dot products a session."""
        if query.dim() != 2:
            return super().score(query)
        ids = torch.arange(self.num_items, device=query.device)
        by_bucket = query @ self.table.to(query.dtype).t()
        index = self.bucket_index(ids)  # [num_items, hashes]
        scores = by_bucket[:, index[:, 0]]
        for h in range(1, index.shape[1]):
            scores = scores + by_bucket[:, index[:, h]]
        return scores * (ids > 0).to(scores.dtype)

    def storage(self) -> StorageReport:
        return StorageReport(
            tensors=(StoredTensor("table", (self.buckets, self.dim), "float32"),
                     StoredTensor("hash_params", (self.config.hashes, 2), "int64")),
            num_items=self.num_items, dim=self.dim,
            paper_ratio=self.num_items / self.buckets,
            notes=(f"{self.buckets} rows shared by {self.num_items - 1} items"
                   + (", two hashes summed" if self.config.hashes == 2 else ""),))


def hash_budget(config: HashConfig, num_items: int, dim: int, ratio: float) -> HashConfig:
    """The most buckets whose bytes still meet `ratio`."""
    full = num_items * dim * 4
    most = max(1, min(num_items - 2, int(full / ratio) // (dim * 4)))
    candidates = range(max(1, most - 2), most + 1)
    buckets = largest_meeting(candidates, lambda b: b * dim * 4 + config.hashes * 16, full,
                              ratio, f"hash with {config.hashes} hash(es)")
    return HashConfig(buckets=buckets, hashes=config.hashes, hash_seed=config.hash_seed)


@dataclass
class QRConfig:
    remainders: int = 0  # m, the rows of the remainder table; 0 = ceil(sqrt(items))
    combine: Literal["mult", "add"] = "mult"

    def __post_init__(self) -> None:
        if self.remainders < 0:
            raise ValueError(f"--remainders must be positive (or 0 for the square root of the "
                             f"items), got {self.remainders}")
        if self.combine not in ("mult", "add"):
            raise ValueError(f"--combine must be mult or add, got {self.combine!r}")


class QuotientRemainderTable(Compressor):
    def __init__(self, num_items: int, dim: int, config: QRConfig) -> None:
        super().__init__(num_items, dim)
        self.config = config
        self.m = config.remainders or math.isqrt(num_items - 1) + 1
        if self.m < 2 or self.m >= num_items:
            raise ValueError(f"--remainders {self.m} must be in [2, {num_items - 1}]")
        self.quotients = -(-num_items // self.m)
        self.quotient = nn.Parameter(torch.empty(self.quotients, dim))
        self.remainder = nn.Parameter(torch.empty(self.m, dim))
        with torch.no_grad():  # rows start at the full table's spread
            if config.combine == "mult":
                self.quotient.uniform_(-0.1, 0.1)
                self.remainder.normal_(1.0, 0.1)
            else:
                self.quotient.uniform_(-0.05, 0.05)
                self.remainder.uniform_(-0.05, 0.05)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        q = nn.functional.embedding(torch.div(ids, self.m, rounding_mode="floor"), self.quotient)
        r = nn.functional.embedding(torch.remainder(ids, self.m), self.remainder)
        rows = q * r if self.config.combine == "mult" else q + r
        return rows * (ids > 0).unsqueeze(-1).to(rows.dtype)

    def weight(self) -> torch.Tensor:
        return self.forward(torch.arange(self.num_items, device=self.quotient.device))

    def score(self, query: torch.Tensor) -> torch.Tensor:
        """Every (quotient, remainder) pair scored at once, item i = its pair's cell: for
        mult, quotient rows against the query-weighted remainder rows ([B, quotients, m],
        one batched product); for add, the two tables' scores summed. Exact, with no item
        table rebuilt."""
        if query.dim() != 2:
            return super().score(query)
        quotient, remainder = self.quotient.to(query.dtype), self.remainder.to(query.dtype)
        if self.config.combine == "mult":
            weighted = query.unsqueeze(1) * remainder  # [B, m, dim]
            pairs = torch.matmul(quotient, weighted.transpose(1, 2))  # [B, quotients, m]
        else:
            pairs = (query @ quotient.t()).unsqueeze(2) + (query @ remainder.t()).unsqueeze(1)
        scores = pairs.flatten(1)[:, :self.num_items]
        padding = torch.ones(self.num_items, dtype=scores.dtype, device=scores.device)
        padding[0] = 0
        return scores * padding

    def storage(self) -> StorageReport:
        return StorageReport(
            tensors=(StoredTensor("quotient", (self.quotients, self.dim), "float32"),
                     StoredTensor("remainder", (self.m, self.dim), "float32")),
            num_items=self.num_items, dim=self.dim,
            paper_ratio=self.num_items / (self.quotients + self.m),
            notes=(f"{self.quotients} quotient rows x {self.m} remainder rows, "
                   f"{self.config.combine}",))


def qr_budget(config: QRConfig, num_items: int, dim: int, ratio: float) -> QRConfig:
    """The fewest remainder rows (the largest tables) whose bytes still meet `ratio`."""
    root = math.isqrt(num_items - 1) + 1
    candidates = range(root, 1, -1)  # tables grow as m falls below the square root

    def table_bytes(m: int) -> int:
        return (-(-num_items // m) + m) * dim * 4

    m = largest_meeting(candidates, table_bytes, num_items * dim * 4, ratio, "qr")
    return QRConfig(remainders=m, combine=config.combine)


@registry.register("hash", config=HashConfig, budget=hash_budget,
                   description="the hashing trick: items share the rows of a small table "
                               "(--hashes 2: double hashing)")
def build_hash(config: HashConfig, *, num_items: int, dim: int) -> HashedTable:
    return HashedTable(num_items, dim, config)


@registry.register("qr", config=QRConfig, budget=qr_budget,
                   description="quotient-remainder tables, a row of each per item (Shi et al. 2020)")
def build_qr(config: QRConfig, *, num_items: int, dim: int) -> QuotientRemainderTable:
    return QuotientRemainderTable(num_items, dim, config)
