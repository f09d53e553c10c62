"""Per-case evaluation shared by training and the report: which test cases are repeat clicks or
new items, hot or cold labels, and the session recency ranking every case is compared with."""

from __future__ import annotations

import numpy as np

from ecbench.bench.data.batching import Examples
from ecbench.bench.evaluation.metrics import recency_ranks


def test_case_groups(test: Examples, hot_items: np.ndarray, max_len: int
                     ) -> dict[str, np.ndarray]:
    """Boolean masks over the test cases: repeat / new label (in the last `max_len` items or
    not), hot / cold label (`hot_items`: a boolean mask over item ids)."""
    repeat = test.target_in_prefix(max_len)
    hot = hot_items[test.targets]
    return {"repeat": repeat, "new": ~repeat, "hot_label": hot, "cold_label": ~hot}


def session_recency_ranks(examples: Examples, max_len: int, num_real_items: int,
                          chunk: int = 4096) -> np.ndarray:
    """`recency_ranks` of every example over what a model sees of it (its last `max_len`
    items), in chunks that bound the [chunk, L, L] comparison."""
    return np.concatenate([
        recency_ranks(batch.items.numpy(), batch.targets.numpy(), num_real_items)
        for batch in examples.batches(chunk, max_len)]) if len(examples) else np.zeros(0)
