"""How a compositional-code table spends its codes, and what that costs in ranking.

An item's vector is the sum of M codewords, so two items whose codes differ in one codebook
differ by one codeword pair: a session that scores one high scores the other nearly as high.
This module counts, for a trained ccode model: how often each codeword is used (the paper's
Fig. 6), how many items sit one codeword away from each item, and how many of the items a
model ranks above a missed label are such neighbours of it (the crowding of a repeat click).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ecbench.backbones import Backbone
from ecbench.bench.errors import ConfigError


def codeword_usage(codes: np.ndarray, K: int) -> np.ndarray:
    """[M, K] counts: how many items use codeword k of codebook i (Fig. 6's heatmap)."""
    M = codes.shape[1]
    flat = (codes + np.arange(M) * K).ravel()
    return np.bincount(flat, minlength=M * K).reshape(M, K)


def one_codeword_neighbours(codes: np.ndarray) -> np.ndarray:
    """[N] the number of other items whose code differs from each item's in exactly one
    codebook. Codes must be unique (as deployed): items that agree on every codebook but i
    then differ exactly in codebook i, so each codebook contributes its group size minus one."""
    counts = np.zeros(len(codes), dtype=np.int64)
    for i in range(codes.shape[1]):  # M is a handful
        rest = np.delete(codes, i, axis=1)
        _, inverse, size = np.unique(rest, axis=0, return_inverse=True, return_counts=True)
        counts += size[inverse.ravel()] - 1
    return counts


def neighbour_share(top: np.ndarray, labels: np.ndarray, codes: np.ndarray) -> float:
    """The share of the items listed [n, k] whose code is one codeword from their case's label
    (`codes` indexed by item id)."""
    distance = (codes[top] != codes[labels][:, None, :]).sum(-1)
    return float((distance == 1).mean()) if distance.size else float("nan")


def summarise_codes(codes: np.ndarray, K: int) -> dict[str, Any]:
    """Usage and neighbour statistics of the real items' codes [N, M]."""
    usage = codeword_usage(codes, K)
    neighbours = one_codeword_neighbours(codes)
    return {
        "items": int(len(codes)), "M": int(codes.shape[1]), "K": int(K),
        "occupancy": float(len(codes) / float(K) ** codes.shape[1]),
        "codeword_usage": usage.tolist(),
        "usage_min": int(usage.min()), "usage_max": int(usage.max()),
        "unused_codewords": int((usage == 0).sum()),
        "one_codeword_neighbours_mean": float(neighbours.mean()),
        "items_with_a_neighbour": float(100.0 * (neighbours > 0).mean()),
    }


def analyse_codes(record_path: Path, *, data_root: str | None, workdir: Path,
                  results_dir: Path, threads: int = 1) -> tuple[dict[str, Any], Path]:
    """Code statistics of a recorded ccode run, and the crowding of its missed test cases:
    of the top-10 items above a label ranked below 10, the share one codeword from it, for
    repeat clicks and new items. Written to RESULTS/analysis/codes-<record>.json."""
    from ecbench.bench.evaluation.cases import test_case_groups
    from ecbench.bench.report.analysis import TOP, rank_recorded, write_analysis

    def has_codes(model: Backbone) -> None:
        if not hasattr(model.compressor, "codes") or not getattr(model.compressor, "deployed",
                                                                 False):
            raise ConfigError(f"record {record_path} has no deployed integer codes "
                              "(a ccode run)")

    run = rank_recorded(record_path, data_root=data_root, workdir=workdir, threads=threads,
                        check=has_codes)
    compressor = run.model.compressor
    codes = compressor.codes.cpu().numpy()
    labels, ranked = run.prepared.test.targets, run.ranked
    crowding = {}
    groups = test_case_groups(run.prepared.test, run.prepared.hot_items, run.config.max_len)
    for name, mask in groups.items():
        if name in ("repeat", "new"):
            cases = mask & (ranked.ranks > TOP)
            crowding[name] = {
                "missed_cases": int(cases.sum()),
                "neighbour_share_of_top": neighbour_share(ranked.top[cases], labels[cases], codes)}
    summary = summarise_codes(codes[1:], compressor.K)  # row 0 is the padding item
    chance = summary["one_codeword_neighbours_mean"] / (summary["items"] - 1)
    return write_analysis("codes", run, {"codes": summary, "crowding": crowding,
                                         "neighbour_share_by_chance": chance},
                          results_dir, threads)
