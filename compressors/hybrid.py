"""`hybrid` (ours): exact float rows for the hottest items, compositional codes for the rest.

A handful of items take most of the clicks, and a compressed row costs them most. Here the
`exact_rows` most frequent items of the training split (ties by id) keep an exact float32 row
each; every other item is a ccode item (M codebooks of K codewords, the paper's Eq. 10), coded
by an inner `CompositionalCodeTable` over the cold items alone (its item 0 is the padding row).

Both parts start from the teacher's table: the hot rows are the teacher's rows, the inner
table learns its codes from the teacher's cold rows (`init_from_table`). Distillation's hooks
reach the inner table with the cold rows of the teacher's live table (`follow_teacher_table`),
and the mixup weight (`set_mixup`), the legacy mixed / compressed scorings, code freezing
(`start_epoch`), its reconstruction loss, `deploy` and `undeploy` are its own; the hot rows are
trained directly and mix nothing in.

Stored (all counted): the hot rows [exact_rows, dim] float32, the hot ids sorted (smallest
unsigned type holding num_items - 1), and ccode's codes and codebooks for the cold items (and
padding). An item's place follows from the hot ids alone: with h(v) the hot ids <= v (a
cumulative sum), a hot item's row is h(v) - 1, a cold item's code is that of inner item
v - h(v). Scores are exact: ccode's lookup-table scores, with the hot columns replaced by
q . hot row.
"""

from __future__ import annotations

import dataclasses
import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ecbench.compressors import registry
from ecbench.compressors.base import (Compressor, InferenceForm, StorageReport, StoredTensor,
                                      dense_scores, held_index, items_by_count,
                                      smallest_unsigned_dtype, widened)
from ecbench.compressors.budget import largest_meeting
from ecbench.compressors.ccode import CCodeConfig, CompositionalCodeTable, ccode_tensors
from ecbench.compressors.codewords import CodeLookupForm

DEFAULT_HOT_FRACTION = 0.01  # exact rows when --exact-rows is 0: 1% of the items


@dataclass
class HybridConfig(CCodeConfig):
    """ccode's options (same names, same meanings, for the cold items) and the hot rows."""

    exact_rows: int = 0  # the hottest items kept as exact rows; 0 = 1% of the items

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.exact_rows < 0:
            raise ValueError(f"--exact-rows must be positive (or 0 for 1% of the items), got "
                             f"{self.exact_rows}")

    def ccode_config(self) -> CCodeConfig:
        """The inner ccode table's options."""
        return CCodeConfig(**{f.name: getattr(self, f.name)
                              for f in dataclasses.fields(CCodeConfig)})


def resolved_exact_rows(config: HybridConfig, num_items: int) -> int:
    return config.exact_rows or max(1, round(DEFAULT_HOT_FRACTION * (num_items - 1)))


def hybrid_tensors(num_items: int, dim: int, exact_rows: int, M: int, K: int
                   ) -> tuple[StoredTensor, ...]:
    """Hot rows, sorted hot ids, and ccode's codes and codebooks for padding + cold items."""
    return (StoredTensor("hot_rows", (exact_rows, dim), "float32"),
            StoredTensor("hot_ids", (exact_rows,), smallest_unsigned_dtype(num_items - 1).name),
            *ccode_tensors(num_items - exact_rows, dim, M, K))


def slot_maps(hot_ids: torch.Tensor, num_items: int
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """From the hot ids ([H] int64): whether each item is hot [N] bool, its hot row [N] (0 for
    cold items) and its inner ccode item [N] (0 for hot items and padding)."""
    hot = torch.zeros(num_items, dtype=torch.long, device=hot_ids.device).index_fill(0, hot_ids, 1)
    hot_up_to = hot.cumsum(0)  # hot ids <= v
    is_hot = hot > 0
    ids = torch.arange(num_items, device=hot_ids.device)
    hot_row = torch.where(is_hot, hot_up_to - 1, torch.zeros_like(ids))
    cold_item = torch.where(is_hot, torch.zeros_like(ids), ids - hot_up_to)
    return is_hot, hot_row, cold_item


class HybridTable(Compressor):
    def __init__(self, num_items: int, dim: int, config: HybridConfig) -> None:
        super().__init__(num_items, dim)
        self.config = config
        self.exact_rows = resolved_exact_rows(config, num_items)
        cold = num_items - 1 - self.exact_rows
        if cold < config.K:
            raise ValueError(f"--exact-rows {self.exact_rows} leaves {max(cold, 0)} of the "
                             f"{num_items - 1} items to the codes, fewer than the K={config.K} "
                             "codewords of a codebook")
        self.M, self.K = config.M, config.K
        self.coded = CompositionalCodeTable(cold + 1, dim, config.ccode_config())
        self.hot_rows = nn.Parameter(torch.empty(self.exact_rows, dim).uniform_(-0.1, 0.1))
        # the hot items, sorted; the first ids until init_from_counts
        self.register_buffer("hot_ids", torch.arange(1, self.exact_rows + 1))
        self._set_maps()
        self.register_load_state_dict_post_hook(lambda module, _: module._set_maps())

    def _set_maps(self) -> None:
        is_hot, hot_row, cold_item = slot_maps(self.hot_ids, self.num_items)
        self.register_buffer("is_hot", is_hot, persistent=False)
        self.register_buffer("hot_row", hot_row, persistent=False)
        self.register_buffer("cold_item", cold_item, persistent=False)
        # inner item -> item id (inner 0 is padding): where the teacher's cold rows come from
        self.register_buffer("cold_ids", torch.cat([hot_row.new_zeros(1),
                                                    torch.nonzero(~is_hot[1:]).flatten() + 1]),
                             persistent=False)

    # -- arrangement -----------------------------------------------------------------------------
    def uses_item_counts(self) -> bool:
        return True

    @torch.no_grad()
    def init_from_counts(self, counts: torch.Tensor) -> None:
        """The `exact_rows` most frequent items (ties by id) become the hot items."""
        order = items_by_count(counts, self.num_items)
        if bool(self.coded.teacher.any()):
            raise ValueError("hybrid: init_from_counts must come before init_from_table (the "
                             "codes were learned for another set of cold items)")
        hot = np.sort(order[:self.exact_rows])
        self.hot_ids.copy_(torch.from_numpy(hot))
        self._set_maps()

    def uses_teacher(self) -> bool:
        return True

    @torch.no_grad()
    def init_from_table(self, table: torch.Tensor) -> None:
        """Hot rows from the teacher's rows; codes learned from its cold rows (ccode)."""
        if table.shape != (self.num_items, self.dim):
            raise ValueError(f"teacher table is {tuple(table.shape)}, expected "
                             f"{(self.num_items, self.dim)}: another dataset or dim")
        table = table.to(self.hot_rows.device)
        self.hot_rows.copy_(table[self.hot_ids])
        self.coded.init_from_table(table[self.cold_ids])

    def follow_teacher_table(self, table: torch.Tensor) -> None:
        self.coded.follow_teacher_table(table[self.cold_ids])

    # -- the table -------------------------------------------------------------------------------
    def weight(self) -> torch.Tensor:
        rows = self.coded.weight()[self.cold_item]  # hot items and padding: the zero row 0
        return torch.where(self.is_hot.unsqueeze(1), self.hot_rows[self.hot_row], rows)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Rows of `ids`; with frozen codes, composed for those ids alone (no table)."""
        if not self.coded.deployed:
            return super().forward(ids)
        hot = F.embedding(self.hot_row[ids], self.hot_rows)
        return torch.where(self.is_hot[ids].unsqueeze(-1), hot, self.coded(self.cold_item[ids]))

    def score(self, query: torch.Tensor) -> torch.Tensor:
        """Exact scores; with frozen codes ccode's lookup-table scores of the cold items, the hot
        columns q . hot row."""
        if not self.coded.deployed or query.dim() != 2:
            return dense_scores(query, self.current_weight())
        by_item = self.coded.score(query).t().index_select(0, self.cold_item)  # [N, B]
        hot = dense_scores(self.hot_rows, query).to(by_item.dtype)  # [H, B]
        return by_item.index_copy(0, self.hot_ids, hot).t()

    # -- hooks of the inner ccode table ----------------------------------------------------------
    def extra_loss(self) -> torch.Tensor | None:
        return self.coded.extra_loss()

    def start_epoch(self, epoch: int) -> dict[str, Any]:
        return self.coded.start_epoch(epoch)

    def set_mixup(self, eta: float) -> None:
        """The mixup weight of Eq. 16, for the coded items (the hot rows mix nothing in)."""
        self.coded.set_mixup(eta)

    @contextmanager
    def compressed_scoring(self) -> Iterator[bool]:
        with self.coded.compressed_scoring() as changed:
            yield changed

    @contextmanager
    def mixed_scoring(self) -> Iterator[bool]:
        with self.coded.mixed_scoring() as changed:
            yield changed

    def deploy(self) -> None:
        self.coded.deploy()

    def undeploy(self) -> None:
        self.coded.undeploy()

    @torch.no_grad()
    def deploy_untrained(self, seed: int = 0) -> None:
        """Long-tailed random counts choose the hot items; ccode's random unique codes."""
        g = torch.Generator().manual_seed(seed)
        counts = (1000.0 / torch.arange(1, self.num_items + 1)).long()
        counts = counts[torch.randperm(self.num_items, generator=g)]
        counts[0] = 0
        self.init_from_counts(counts)
        self.coded.deploy_untrained(seed)

    # -- deployed form ---------------------------------------------------------------------------
    def storage(self) -> StorageReport:
        inner = self.coded.storage()
        hot = hybrid_tensors(self.num_items, self.dim, self.exact_rows, self.M, self.K)[:2]
        hot_bytes = sum(t.nbytes for t in hot)
        numbers = self.exact_rows * (self.dim + 1) + self.M * self.K * self.dim + \
            self.M * self.coded.num_items
        return StorageReport(
            tensors=hot + inner.tensors, num_items=self.num_items, dim=self.dim,
            paper_ratio=self.num_items * self.dim / numbers,
            notes=(f"{self.exact_rows} hot items as exact rows, "
                   f"{self.coded.num_items - 1} coded (M={self.M}, K={self.K})", *inner.notes),
            packed_bytes=None if inner.packed_bytes is None else inner.packed_bytes + hot_bytes)

    def inference_form(self, exportable: bool = False) -> "HybridForm":
        """Hot rows, hot ids (smallest unsigned type) and ccode's deployed form."""
        hot_ids = self.hot_ids.cpu().numpy().astype(smallest_unsigned_dtype(self.num_items - 1))
        return HybridForm(held_index(hot_ids), self.hot_rows.detach().cpu().clone(),
                          self.coded.inference_form(exportable), self.num_items, exportable)


class HybridForm(InferenceForm):
    """A deployed hybrid table: hot rows, sorted hot ids as stored, ccode's `CodeLookupForm`.

    The maps from an id to its hot row or code follow from the hot ids (`slot_maps`): built once
    at load for eager, on every call when `exportable`, so the artefact holds only the ids.
    """

    def __init__(self, hot_ids: torch.Tensor, hot_rows: torch.Tensor, coded: CodeLookupForm,
                 num_items: int, exportable: bool) -> None:
        super().__init__(None)
        self.num_items, self.dim = num_items, hot_rows.shape[1]
        self.exportable = exportable
        self.coded = coded
        self.hot_rows = nn.Parameter(hot_rows, requires_grad=False)
        self.register_buffer("hot_ids", hot_ids)
        if not exportable:
            wide = widened(hot_ids)
            self.register_buffer("wide_hot_ids", wide, persistent=False)
            for name, tensor in zip(("is_hot", "hot_row", "cold_item"), slot_maps(wide, num_items)):
                self.register_buffer(name, tensor, persistent=False)

    def _maps(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.exportable:
            wide = widened(self.hot_ids)
            return (wide, *slot_maps(wide, self.num_items))
        return self.wide_hot_ids, self.is_hot, self.hot_row, self.cold_item

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        _, is_hot, hot_row, cold_item = self._maps()
        hot = F.embedding(hot_row[ids], self.hot_rows)
        return torch.where(is_hot[ids].unsqueeze(-1), hot, self.coded(cold_item[ids]))

    def score(self, query: torch.Tensor) -> torch.Tensor:
        hot_ids, _, _, cold_item = self._maps()
        by_item = self.coded.score(query).t().index_select(0, cold_item)  # [N, B]
        return by_item.index_copy(0, hot_ids, self.hot_rows @ query.t()).t()


def hybrid_budget(config: HybridConfig, num_items: int, dim: int, ratio: float
                  ) -> HybridConfig:
    """The most exact rows (for the given M and K) whose bytes still meet `ratio`."""
    full = num_items * dim * 4

    def table_bytes(rows: int) -> int:
        return sum(t.nbytes for t in hybrid_tensors(num_items, dim, rows, config.M, config.K))

    per_row = table_bytes(2) - table_bytes(1)  # bytes are linear in the exact rows
    most = math.floor((full / ratio - table_bytes(1)) / per_row) + 1
    most = min(most, num_items - 1 - config.K)
    candidates = range(max(1, most - 2), max(1, most) + 1)
    rows = largest_meeting(candidates, table_bytes, full, ratio,
                           f"hybrid with M={config.M} K={config.K}")
    return dataclasses.replace(config, exact_rows=rows)


@registry.register("hybrid", config=HybridConfig, budget=hybrid_budget,
                   description="ours: exact rows for the hottest items, compositional codes "
                               "(ccode) for the rest")
def build_hybrid(config: HybridConfig, *, num_items: int, dim: int) -> HybridTable:
    return HybridTable(num_items, dim, config)
