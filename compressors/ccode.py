"""`ccode`: EODRec's compositional codes (the paper's Section 4, Eq. 10-16).

Each item v has a code C_v in [0, K)^M; its vector is the sum of one codeword from each of the
M codebooks, e_v = sum_i E_i(C_v^i) (Eq. 10). Codes are learned end to end from a trained
teacher table X: a two-layer MLP gives per-codebook distributions alpha_v^i (Eq. 15) and a hard,
straight-through Gumbel-softmax samples one-hot codes from them (Eq. 13-14). Training may mix in
the teacher table (embedding mixup, Eq. 16) and adds the reconstruction MSE (Eq. 12).

Two states:
- learning: codes are sampled every forward pass (training) or taken as the encoder's argmax
  (evaluation: the deployed form, the compressed table alone);
- deployed (`freeze_codes()`): codes are fixed integers, made unique, stored as the smallest
  unsigned type holding K-1; the encoder and the teacher table are gone.
"""

from __future__ import annotations

import dataclasses
import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Literal

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ecbench.compressors import registry
from ecbench.compressors.budget import largest_meeting
from ecbench.compressors.base import (Compressor, DeployedState, StorageReport, StoredTensor,
                                      dense_scores, held_index, smallest_unsigned_dtype)
from ecbench.compressors.code_learning import (CodeEncoder, StraightThroughCodes, balanced_random_codes,
                                       cluster_means, gumbel_softmax_sample, kmeans,
                                       make_codes_unique)
from ecbench.compressors.codewords import (CodeLookupForm, codeword_rows, codeword_sum,
                                           lookup_table_scores)


@dataclass
class CCodeConfig:
    M: int = 4  # codebooks
    K: int = 32  # codewords per codebook
    tau: float = 0.3  # Gumbel-softmax temperature (Section 6.1.3)
    eta: float = 0.0  # weight of the teacher table in the embedding mixup (Eq. 16); training only
    mse_weight: float = 1.0  # weight of L_mse (Eq. 12); Eq. 24 uses 1
    eval_table: Literal["compressed", "mixed"] = "compressed"
    standardize: bool = True  # standardise each teacher dimension before the encoder
    # The fraction of items whose codes are re-sampled (and whose encoder outputs learn) at each
    # training step; the others keep their last sample. 1 = every item, as the paper; a smaller
    # fraction makes a step several times cheaper (the encoder and the Gumbel noise dominate it).
    code_sample: float = 1.0
    # Scale of the Gumbel noise when codes are sampled in training: 1 samples from alpha (Eq. 14,
    # the paper); smaller values move the trained codes towards the argmax that is deployed;
    # 0 trains on the argmax itself (straight-through through softmax(logits / tau)).
    gumbel_scale: float = 1.0
    # Learn the codes end to end for this many epochs, then freeze them (made unique, as deployed)
    # and train the codebooks and the backbone on the recommendation loss alone. None: learn
    # them throughout (the paper). 0: keep the codes of the initialisation (residual k-means of
    # the teacher table) from the start.
    freeze_codes_after: int | None = None
    # With freeze_codes_after 0, the codes kept: the encoder's argmax after it is fitted to the
    # residual k-means assignments ("encoder"), or those assignments themselves ("kmeans"),
    # which reconstruct the teacher's table a little better. Both are made unique.
    initial_codes: Literal["encoder", "kmeans"] = "encoder"
    # With initial_codes kmeans, the last R codebooks take seeded random codes (each codeword
    # given to as many items as the others) instead of residual k-means. Similar items share
    # their k-means codes, so the compressed table confuses them; random codebooks keep them
    # apart, which a repeat click (the label is already in the session) needs.
    random_codebooks: int = 0

    def __post_init__(self) -> None:
        if self.M < 1:
            raise ValueError(f"--M must be at least 1, got {self.M}")
        if self.K < 2:
            raise ValueError(f"--K must be at least 2, got {self.K}")
        if self.tau <= 0:
            raise ValueError(f"--tau must be positive, got {self.tau}")
        if not 0.0 <= self.eta < 1.0:
            raise ValueError(f"--eta must be in [0, 1), got {self.eta}")
        if self.mse_weight < 0:
            raise ValueError(f"--mse-weight must be non-negative, got {self.mse_weight}")
        if self.gumbel_scale < 0:
            raise ValueError(f"--gumbel-scale must be non-negative, got {self.gumbel_scale}")
        if not 0.0 < self.code_sample <= 1.0:
            raise ValueError(f"--code-sample must be in (0, 1], got {self.code_sample}")
        if self.freeze_codes_after is not None and self.freeze_codes_after < 0:
            raise ValueError(f"--freeze-codes-after must be >= 0 or none, got "
                             f"{self.freeze_codes_after}")
        if self.initial_codes not in ("encoder", "kmeans"):
            raise ValueError(f"--initial-codes must be encoder or kmeans, got "
                             f"{self.initial_codes!r}")
        if self.initial_codes == "kmeans" and self.freeze_codes_after != 0:
            raise ValueError("--initial-codes kmeans keeps the codes of the initialisation: it "
                             "needs --freeze-codes-after 0")
        if not 0 <= self.random_codebooks <= self.M:
            raise ValueError(f"--random-codebooks must be in [0, M={self.M}], got "
                             f"{self.random_codebooks}")
        if self.random_codebooks and self.initial_codes != "kmeans":
            raise ValueError("--random-codebooks replaces k-means codes that are kept: it needs "
                             "--initial-codes kmeans")
        if self.eval_table not in ("compressed", "mixed"):
            raise ValueError(f"--eval-table must be compressed or mixed, got {self.eval_table!r}")


def ccode_tensors(num_items: int, dim: int, M: int, K: int) -> tuple[StoredTensor, ...]:
    """What the deployed table stores: codes in the smallest type holding K-1, float32 codebooks."""
    return (StoredTensor("codes", (num_items, M), smallest_unsigned_dtype(K - 1).name),
            StoredTensor("codebooks", (M, K, dim), "float32"))


def ccode_budget(config: CCodeConfig, num_items: int, dim: int, ratio: float) -> CCodeConfig:
    """The most codebooks M (for the given K) whose byte ratio still meets `ratio`."""
    options = [m for m in range(1, 65) if config.K ** m >= num_items - 1]
    M = largest_meeting(options, lambda m: sum(t.nbytes for t in ccode_tensors(
        num_items, dim, m, config.K)), num_items * dim * 4, ratio, f"ccode with K={config.K}")
    return dataclasses.replace(config, M=M)


def eq11_ratio(num_items: int, dim: int, M: int, K: int) -> float:
    """rate = |V| N / (M K N + M |V|)   (Eq. 11)."""
    return num_items * dim / (M * K * dim + M * num_items)


class CompositionalCodeTable(DeployedState, Compressor):
    def __init__(self, num_items: int, dim: int, config: CCodeConfig) -> None:
        super().__init__(num_items, dim)
        if config.K > num_items - 1:
            raise ValueError(f"--K {config.K} exceeds the {num_items - 1} items: codewords "
                             "would outnumber what they encode")
        self.config = config
        # Section 4.1 makes every item's code unique; with fewer codes (K^M) than items, as in
        # the paper's Table 4 at M=1 K=32, items must share codes, and so every score.
        self.unique_codes = config.K ** config.M >= num_items - 1
        self.M, self.K = config.M, config.K
        self.codebooks = nn.Parameter(torch.empty(self.M, self.K, dim).uniform_(-0.1, 0.1))
        self.encoder = CodeEncoder(dim, self.M, self.K)
        self.register_buffer("teacher", torch.zeros(num_items, dim))
        self.register_buffer("teacher_input", torch.zeros(num_items, dim))
        self.register_buffer("codes", torch.zeros(num_items, self.M, dtype=torch.long))
        self.register_buffer("row_mask", (torch.arange(num_items) > 0).float().unsqueeze(1),
                             persistent=False)
        # in buffers, so a checkpoint or saved model carries the state
        self._init_deployed_state()
        self.register_buffer("collisions", torch.tensor(0))
        self._mse: torch.Tensor | None = None

    # -- teacher hand-off ----------------------------------------------------------------------
    def uses_teacher(self) -> bool:
        return True

    @torch.no_grad()
    def init_from_table(self, table: torch.Tensor) -> None:
        """Learn codes from this trained table: it becomes the encoder input and the MSE target.

        Codebooks start from residual k-means of the table (codebook i clusters what codebooks
        1..i-1 left unexplained), and the encoder is fitted to reproduce those assignments, so
        end-to-end learning starts from a good quantisation instead of noise. The last
        `random_codebooks` codebooks assign balanced random codes instead, their codewords the
        mean residual of their items.
        """
        if table.shape != (self.num_items, self.dim):
            raise ValueError(f"teacher table is {tuple(table.shape)}, expected "
                             f"{(self.num_items, self.dim)}: another dataset or dim")
        table = table.to(self.codebooks.device)
        self.teacher.copy_(table)
        self.teacher[0] = 0  # the padding row, as in every table (mixup and MSE rely on it)
        self._set_encoder_input(table[1:])
        residual = table[1:].clone()
        assignments = []
        semantic = self.M - self.config.random_codebooks
        for i in range(self.M):
            if i < semantic:
                centroids, assignment = kmeans(residual, self.K, iterations=15, seed=i)
            else:
                assignment = balanced_random_codes(len(residual), self.K, seed=i).to(
                    residual.device)
                centroids = cluster_means(residual, assignment, self.K)
            self.codebooks[i] = centroids
            residual -= centroids[assignment]
            assignments.append(assignment)
        self._fit_encoder(torch.stack(assignments, 1))
        self.codes.copy_(self.code_distribution().argmax(-1))
        if self.config.initial_codes == "kmeans":
            self.codes[1:] = torch.stack(assignments, 1)

    @torch.no_grad()
    def follow_teacher_table(self, table: torch.Tensor) -> None:
        """The live teacher's table becomes the mixup's X (Eq. 16), the MSE target (Eq. 12) and
        the encoder's input (Eq. 15), as Algorithm 1 reads the teacher's current table each
        step; `init_from_table` copied it once, before pretraining."""
        if table.shape != (self.num_items, self.dim):
            raise ValueError(f"teacher table is {tuple(table.shape)}, expected "
                             f"{(self.num_items, self.dim)}")
        self.teacher.copy_(table)
        self.teacher[0] = 0
        self._set_encoder_input(self.teacher[1:])

    def _set_encoder_input(self, table: torch.Tensor) -> None:
        """The code encoder's input: the real items' teacher rows, standardised per dimension
        (`standardize`) so that the encoder sees comparable scales."""
        x = table
        if self.config.standardize:  # every distillation step: two passes, not torch's std(0),
            centred = x - x.mean(0)  # which is 2-3x slower down the columns of a tall table
            std = (centred.square().sum(0) / max(1, len(x) - 1)).sqrt()
            x = centred / std.clamp(min=1e-8)
        self.teacher_input[1:] = x

    @torch.enable_grad()
    def _fit_encoder(self, codes: torch.Tensor, steps: int = 300, batch: int = 8192) -> None:
        """Fit the encoder's argmax to `codes` [N-1, M], on `batch` random items a step (the
        whole table a step would cost minutes at K=256: the encoder is [dim, MK/2, MK])."""
        optimizer = torch.optim.Adam(self.encoder.parameters(), lr=1e-2)
        x = self.teacher_input[1:]
        g = torch.Generator().manual_seed(0)
        for _ in range(steps):
            rows = (torch.randint(len(x), (batch,), generator=g) if len(x) > batch
                    else slice(None))
            log_alpha = self.encoder(x[rows])
            loss = F.nll_loss(log_alpha.reshape(-1, self.K), codes[rows].reshape(-1))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        self.encoder.zero_grad(set_to_none=True)  # no gradient of this fit leaks into training

    # -- codes -------------------------------------------------------------------------------
    def code_distribution(self) -> torch.Tensor:
        """log alpha for every item, [N, M, K]."""
        return self.encoder(self.teacher_input)

    def composite_table(self) -> torch.Tensor:
        """e_v for every item (Eq. 10/13), row 0 zero.

        Training samples codes with the hard straight-through Gumbel-softmax (Eq. 14); evaluation
        takes the encoder's argmax; the deployed form looks its frozen codes up.
        """
        if self.training and not self.deployed:
            return self._sampled_table()
        flat = self.codebooks.reshape(self.M * self.K, self.dim)
        if self.deployed:
            return codeword_sum(flat, *self._lookup_index()) * self.row_mask
        # evaluation before deploy() sees the codes deploy() would freeze (unique), so that
        # validation measures the deployed table, not one with colliding codes
        codes = self._deployable_codes()[0]
        return F.embedding_bag(codes + self._offsets(), flat, mode="sum") * self.row_mask

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Rows of `ids`; with frozen codes, composed for those ids alone (no table)."""
        if not self.deployed:
            return super().forward(ids)
        flat = self.codebooks.reshape(self.M * self.K, self.dim)
        rows = codeword_rows(ids, self._lookup_index()[0][ids], flat)
        if self._mixing():  # the padding row of the teacher table is zero too
            rows = torch.lerp(rows, F.embedding(ids, self.teacher), self.config.eta)
        return rows

    def _sampled_table(self) -> torch.Tensor:
        """Training: new Gumbel samples for all items, or for a random `code_sample` fraction of
        them (the rest keep their last codes), composed straight-through; also sets L_mse."""
        if self.config.code_sample >= 1.0:
            rows, inputs = None, self.teacher_input
        else:
            count = max(1, round(self.config.code_sample * (self.num_items - 1)))
            rows = torch.randperm(self.num_items - 1, device=self.codes.device)[:count] + 1
            inputs = self.teacher_input[rows]
        # softmax and argmax ignore log_softmax's per-codebook shift: the logits suffice
        soft, index = gumbel_softmax_sample(self.encoder.logits(inputs), self.config.tau,
                                            self.config.gumbel_scale)
        with torch.no_grad():
            if rows is None:
                self.codes.copy_(index)
            else:
                self.codes[rows] = index
        # a copy: the buffer changes at the next sample, and this graph may still be needed
        table = StraightThroughCodes.apply(soft, rows, self.codes.clone(), self.codebooks)
        if self.config.mse_weight > 0:  # Eq. 12, over the re-sampled real items
            # mse_loss: one pass over the [N, dim] tables each way, where the spelled-out
            # difference, square and sum take five (about a tenth of the code-learning step)
            if rows is None:  # row 0 is zero in both tables
                self._mse = F.mse_loss(table, self.teacher, reduction="sum") / (self.num_items - 1)
            else:
                self._mse = F.mse_loss(table[rows], self.teacher[rows], reduction="sum") / len(rows)
        return table

    def _offsets(self) -> torch.Tensor:
        return torch.arange(self.M, device=self.codebooks.device) * self.K

    def weight(self) -> torch.Tensor:
        composite = self.composite_table()
        if self._mixing():
            return torch.lerp(composite, self.teacher, self.config.eta)  # eta X + (1-eta) e (Eq. 16)
        return composite

    def _mixing(self) -> bool:
        """Whether the table is the mixup of Eq. 16 (training; or the legacy mixed evaluation)."""
        return self.config.eta > 0 and (self.training or self._evaluates_mixed())

    def _evaluates_mixed(self) -> bool:
        """The legacy evaluation: scored with the teacher's table mixed in (eta > 0 to mix)."""
        return self.config.eval_table == "mixed" and self.config.eta > 0

    @contextmanager
    def compressed_scoring(self) -> Iterator[bool]:
        with self._scored_with("compressed", when=self._evaluates_mixed()) as changed:
            yield changed

    @contextmanager
    def mixed_scoring(self) -> Iterator[bool]:
        # nothing to mix in, or already scored so (then the test itself is the mixed one)
        with self._scored_with("mixed", when=self.config.eta > 0
                               and not self._evaluates_mixed()) as changed:
            yield changed

    @contextmanager
    def _scored_with(self, eval_table: str, when: bool) -> Iterator[bool]:
        """Within this block, evaluate with `eval_table` if `when`; yields whether it did."""
        if not when:
            yield False
            return
        kept = self.config
        self.config = dataclasses.replace(kept, eval_table=eval_table)
        try:
            yield True
        finally:
            self.config = kept

    def set_mixup(self, eta: float) -> None:
        """Change the mixup weight of Eq. 16 (training only), e.g. to anneal it to 0."""
        self.config = dataclasses.replace(self.config, eta=eta)

    def extra_loss(self) -> torch.Tensor | None:
        mse, self._mse = self._mse, None
        return None if mse is None else self.config.mse_weight * mse

    def start_epoch(self, epoch: int) -> dict[str, Any]:
        """Freeze the codes once `freeze_codes_after` epochs have learned them."""
        after = self.config.freeze_codes_after
        if after is None or epoch <= after or self.deployed:
            return {}
        return {"codes_frozen": {"collisions": self.freeze_codes()}}

    # -- deployment ----------------------------------------------------------------------------
    def deploy(self) -> None:
        """Freeze the codes, unless training already has (their codebooks were trained on them)."""
        if not self.deployed:
            self.freeze_codes()

    def undeploy(self) -> None:
        """Learn the codes again (from the encoder, which a deployed model file still holds);
        with `freeze_codes_after` 0 the codes never learn, so they stay as they are."""
        if self.config.freeze_codes_after != 0:
            self._set_deployed(False)

    @torch.no_grad()
    def freeze_codes(self) -> int:
        """Fix each item's code to the encoder's choice, made unique; returns collisions fixed."""
        codes, fixed = self._deployable_codes()
        self.codes.copy_(codes)
        self._set_deployed(True)
        self.collisions.fill_(fixed)
        return fixed

    @torch.no_grad()
    def _deployable_codes(self) -> tuple[torch.Tensor, int]:
        """The encoder's argmax codes (or the k-means ones kept, `initial_codes`) made unique
        (Section 4.1), and how many had to move; the encoder's confidence decides who moves."""
        log_alpha = self.code_distribution()
        kept = self.config.initial_codes == "kmeans"
        codes = self.codes.clone() if kept else log_alpha.argmax(-1)
        codes[0] = 0
        if not self.unique_codes:  # too few codes: items share them (`storage` says how many)
            return codes, (self.num_items - 1) - int(torch.unique(codes[1:], dim=0).shape[0])
        unique, fixed = make_codes_unique(codes.cpu().numpy(), log_alpha.cpu().numpy(), self.K)
        return torch.from_numpy(unique).to(self.codes.device), fixed

    def score(self, query: torch.Tensor) -> torch.Tensor:
        """Exact scores; with frozen codes via per-session lookup tables over the codebooks,
        never the table (`lookup_table_scores`). A mixup adds eta times the teacher's scores,
        which spares training the gradient of the whole [num_items, dim] mixed table."""
        if not self.deployed or query.dim() != 2:
            return dense_scores(query, self.current_weight())
        scores = lookup_table_scores(query, self.codebooks.reshape(self.M * self.K, self.dim),
                                     *self._lookup_index())
        if self._mixing():  # eta q.X + (1 - eta) q.e: the scores of Eq. 16's table
            scores = torch.lerp(scores, dense_scores(query, self.teacher), self.config.eta)
        return scores

    @torch.no_grad()
    def deploy_untrained(self, seed: int = 0) -> None:
        """Random unique codes (code learning would take minutes and not change the timing)."""
        rng = np.random.default_rng(seed)
        keys = rng.choice(self.K ** self.M, size=self.num_items - 1,
                          replace=not self.unique_codes)
        digits = (keys[:, None] // self.K ** np.arange(self.M - 1, -1, -1)) % self.K
        self.codes[1:] = torch.from_numpy(digits).to(self.codes.device)
        self.codes[0] = 0
        self._set_deployed(True)

    def inference_form(self, exportable: bool = False) -> "CodeLookupForm":
        """Codes (smallest unsigned type) and codebooks only; the encoder and teacher stay behind."""
        if not self.deployed:
            raise ValueError("ccode has no inference form before deploy(): its codes are not fixed")
        if self._evaluates_mixed():
            raise ValueError("the legacy mixed evaluation needs the teacher table: not deployable")
        codes = self.codes.cpu().numpy().astype(smallest_unsigned_dtype(self.K - 1))
        return CodeLookupForm(held_index(codes), self.codebooks.detach().cpu().clone(),
                              exportable)

    def _lookup_index(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Codes offset into the flat codebooks, [N, M] and [M, N]; cached until codes change."""
        stamp = (self.codes.data_ptr(), self.codes._version)
        if getattr(self, "_index_stamp", None) != stamp:
            by_item = self.codes.long() + self._offsets()
            self._index_cache = (by_item, by_item.t().contiguous())
            self._index_stamp = stamp
        return self._index_cache

    def storage(self) -> StorageReport:
        tensors = ccode_tensors(self.num_items, self.dim, self.M, self.K)
        notes = [("collisions resolved" if self.unique_codes else
                  f"{self.K ** self.M} codes for {self.num_items - 1} items: items sharing one")
                 + f": {int(self.collisions)}" if self.deployed else "codes not learned yet"]
        if tensors[0].dtype != "uint8":
            notes.append(f"K={self.K} needs {tensors[0].dtype} codes (uint8 holds K <= 256)")
        codebook_bytes = tensors[1].nbytes
        code_bits = self.num_items * self.M * math.ceil(math.log2(self.K))
        if self._evaluates_mixed():
            # the legacy evaluation scores with the teacher's table mixed in: it must be stored
            tensors += (StoredTensor("teacher_table", (self.num_items, self.dim), "float32"),)
            notes.append("legacy mixed evaluation: the teacher table is part of the model")
            codebook_bytes += self.num_items * self.dim * 4
        return StorageReport(
            tensors=tensors,
            num_items=self.num_items, dim=self.dim,
            paper_ratio=eq11_ratio(self.num_items, self.dim, self.M, self.K),
            notes=tuple(notes), packed_bytes=math.ceil(code_bits / 8) + codebook_bytes)


@registry.register("ccode", config=CCodeConfig, budget=ccode_budget,
                   description="compositional codes learned with Gumbel-softmax (EODRec, Eq. 10-16)")
def build_ccode(config: CCodeConfig, *, num_items: int, dim: int) -> CompositionalCodeTable:
    return CompositionalCodeTable(num_items, dim, config)
