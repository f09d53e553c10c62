"""A seeded synthetic session dataset: the embedded default, so the main command runs anywhere.

Items belong to topics; a session keeps to one topic. Within it each click either follows one of
the previous item's few fixed successors (learnable transitions), repeats an earlier click of the
session (as real shoppers do), or draws a fresh item of the topic by its long-tailed popularity.
Topics are long-tailed too, so a popularity ranking is a real but weak baseline. Sessions are
generated all at once, one vectorised step per click position.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ecbench.bench.data.sessions import SessionDataset, Sessions, drop_items


@dataclass(frozen=True)
class SyntheticConfig:
    num_items: int = 2000
    num_topics: int = 40
    num_sessions: int = 8000
    test_fraction: float = 0.1
    mean_length: float = 6.0
    max_length: int = 30
    successors: int = 3
    p_follow: float = 0.55
    p_repeat: float = 0.15
    zipf: float = 1.1
    seed: int = 0


def _zipf_weights(n: int, exponent: float) -> np.ndarray:
    w = 1.0 / np.arange(1, n + 1) ** exponent
    return w / w.sum()


def generate_sessions(cfg: SyntheticConfig) -> Sessions:
    """All sessions in time order (later sessions come last), item ids 1..num_items."""
    rng = np.random.default_rng(cfg.seed)
    per_topic = cfg.num_items // cfg.num_topics
    n_items = per_topic * cfg.num_topics
    n = cfg.num_sessions

    topic_p = _zipf_weights(cfg.num_topics, cfg.zipf)[rng.permutation(cfg.num_topics)]
    within_cdf = np.cumsum(_zipf_weights(per_topic, cfg.zipf))
    # Fixed successors inside the topic, with decreasing strengths.
    local = rng.integers(0, per_topic, size=(n_items, cfg.successors))
    successors = (np.arange(n_items)[:, None] // per_topic) * per_topic + local
    successor_cdf = np.cumsum(_zipf_weights(cfg.successors, 1.0))

    topics = rng.choice(cfg.num_topics, size=n, p=topic_p)
    lengths = np.minimum(2 + rng.geometric(1.0 / max(cfg.mean_length - 1.0, 1.0), size=n),
                         cfg.max_length)
    steps = int(lengths.max())
    clicks = np.zeros((n, steps), dtype=np.int64)

    def topic_draw() -> np.ndarray:
        return topics * per_topic + np.searchsorted(within_cdf, rng.random(n) * within_cdf[-1])

    clicks[:, 0] = topic_draw()
    for t in range(1, steps):
        r = rng.random(n)
        follow = successors[clicks[:, t - 1],
                            np.searchsorted(successor_cdf, rng.random(n) * successor_cdf[-1])]
        repeat = clicks[np.arange(n), rng.integers(0, t, size=n)]
        clicks[:, t] = np.where(r < cfg.p_follow, follow,
                                np.where(r < cfg.p_follow + cfg.p_repeat, repeat, topic_draw()))

    item_ids = rng.permutation(n_items) + 1  # hide the topic blocks behind random ids
    mask = np.arange(steps)[None, :] < lengths[:, None]
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return Sessions(item_ids[clicks[mask]], offsets)


def sequence_split(sessions: Sessions) -> tuple[Sessions, np.ndarray]:
    """All (prefix, next item) pairs of each session, as test prefixes and labels."""
    starts, ends = sessions.split_points()
    return sessions.slices(starts, ends), sessions.items[ends]


def synthetic_dataset(cfg: SyntheticConfig = SyntheticConfig()) -> SessionDataset:
    sessions = generate_sessions(cfg)
    n_test = int(round(len(sessions) * cfg.test_fraction))
    train = sessions.select(np.arange(len(sessions) - n_test))
    seen = np.zeros(cfg.num_items + 2, dtype=bool)
    seen[train.items] = True
    test, _ = drop_items(sessions.select(np.arange(len(sessions) - n_test, len(sessions))),
                         seen)
    prefixes, labels = sequence_split(test)
    checksum = f"synthetic:{train.digest()[:16]}:{prefixes.digest()[:16]}"
    params = ",".join(f"{k}={v}" for k, v in asdict(cfg).items() if v != getattr(SyntheticConfig, k))
    name = "synthetic" + (f"({params})" if params else "")
    return SessionDataset(name, int(train.items.max()) + 1, train, prefixes, labels, checksum)
