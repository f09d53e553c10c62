"""On-device style latency (the paper's Table 5): one thread, deployed form, real test sessions.

Every model is timed in one process, eager and in each exported runtime available, at batch 1
(one user's click) and batch 100 (the paper's "per 100 sessions"): warm-up, then many repeats
cycling over sessions drawn from the test set, median and p90. The models and runtimes take
turns in short blocks of calls, so a busy machine slows them alike. In eager the stages (table rebuild,
encode, score, top-K) are timed apart as well. Ratios to `full` come from the same process;
each artefact's size and whether it could hold a dense table are stored beside.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ecbench.backbones import Backbone
from ecbench.bench.data.batching import Examples
from ecbench.bench.training.config import RunConfig, repeat_head
from ecbench.bench.cpu import configure_cpu, restores_cpu_settings
from ecbench.bench.deploy.recommender import STAGES, DeployedRecommender
from ecbench.bench.deploy.export import (FORMATS, SUFFIX, agreement, artefact_tensors, export,
                                         holds_dense_table, load, missing_runtime)
from ecbench.bench.records import USER_RESULTS, now_iso, provenance, write_json
from ecbench.bench.data.sessions import SessionDataset

EAGER = "eager"
Inputs = tuple[torch.Tensor, torch.Tensor]


@dataclass
class Candidate:
    """A model to time: its config, its deployed model and where its weights came from."""

    config: RunConfig
    model: Backbone
    source: dict[str, Any] = field(default_factory=lambda: {
        "trained": False, "note": "untrained, built at the dataset's shape: timing only"})
    tag: str = ""  # set by `tag_alike` where two candidates would share a label

    @property
    def label(self) -> str:
        options = "-".join(f"{k}{v}" for k, v in sorted(self.config.compressor_options.items()))
        head = self.config.repeat_head
        return "-".join(filter(None, [self.config.backbone, self.config.compressor, options,
                                      head and f"repeat-{head}", self.tag]))


def trained_candidate(record: Path, workdir: Path, data: SessionDataset) -> Candidate:
    """A recorded run's trained model (from WORKDIR/models) as a latency candidate, refused if
    it was trained on other data than `data`."""
    from ecbench.bench.deploy.recommender import load_trained
    from ecbench.bench.errors import ConfigError

    config, rec, model = load_trained(record, workdir)
    if rec["dataset"]["checksum"] != data.checksum:
        raise ConfigError(f"record {record} was trained on {rec['dataset']['name']}, "
                          f"not on {data.name}")
    return Candidate(config, model, {"trained": True, "record": str(record), "key": rec["key"]})


def dense_reference(candidates: Sequence[Candidate], num_items: int) -> Candidate:
    """The dense-table model the candidates' times are read against: the teacher of their own
    settings (encoder, width, dataset presets), without a repeat head unless all have one;
    untrained, since weights do not change its time."""
    from ecbench.bench.deploy.recommender import deployable_model
    from ecbench.bench.training.teacher import teacher_config

    plain = [c for c in candidates if c.config.repeat_head is None] or list(candidates)
    config = teacher_config(plain[0].config)
    return Candidate(config, deployable_model(config, num_items, None))


def tag_alike(candidates: Sequence[Candidate]) -> None:
    """Tag candidates whose labels coincide (a Stu-base and its distilled student, say) with
    their record's key, else their place in the list: a label names an artefact file."""
    counts = Counter(c.label for c in candidates)
    for at, candidate in enumerate(candidates):
        if counts[candidate.label] > 1:
            candidate.tag = candidate.source.get("key") or str(at)


def timing_batches(data: SessionDataset, batch: int, count: int, max_len: int, seed: int = 0
                   ) -> list[Inputs]:
    """`count` batches of `batch` test sessions (drawn without replacement where possible)."""
    examples = Examples.from_prefixes(data.test_prefixes, data.test_labels)
    rng = np.random.default_rng(seed)
    need = batch * count
    index = rng.choice(len(examples), size=need, replace=need > len(examples))
    out = []
    for lo in range(0, need, batch):
        b = examples.batch(index[lo:lo + batch], max_len)
        out.append((b.items, b.lengths))
    return out


def _summary(seconds: np.ndarray) -> dict[str, float]:
    return {"median_ms": 1e3 * float(np.median(seconds)),
            "p90_ms": 1e3 * float(np.percentile(seconds, 90)),
            "repeats": int(len(seconds))}


def call_seconds(fn: Callable[[torch.Tensor, torch.Tensor], Any], inputs: Inputs
                 ) -> tuple[float]:
    """Seconds of one end-to-end call."""
    start = time.perf_counter()
    fn(*inputs)
    return (time.perf_counter() - start,)


def stage_seconds(deployed: DeployedRecommender, inputs: Inputs) -> tuple[float, ...]:
    """Eager seconds of each stage of one call: items (table rebuild, if any), encode, score,
    top_k (`ecbench.bench.deploy.recommender.STAGES`)."""
    item_seq, lengths = inputs
    t0 = time.perf_counter()
    with deployed.items.call():  # entering rebuilds a table the rows need
        t1 = time.perf_counter()
        query = deployed.encode(item_seq, lengths)
        t2 = time.perf_counter()
        scores = deployed.score(query, item_seq)
        t3 = time.perf_counter()
        deployed.top_k(scores)
        t4 = time.perf_counter()
    return t1 - t0, t2 - t1, t3 - t2, t4 - t3


Measure = Callable[[Inputs], tuple[float, ...]]


BLOCK = 10  # calls a model makes in a row when the models take turns
CACHES = ("warm", "cold")


def last_level_cache_bytes() -> int | None:
    """The largest CPU cache of this machine, from sysfs (Linux), or None."""
    sizes = []
    for path in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        text = path.read_text().strip().upper()
        scale = {"K": 2**10, "M": 2**20, "G": 2**30}.get(text[-1:], 1)
        try:
            sizes.append(int(text.rstrip("KMG")) * scale)
        except ValueError:
            continue
    return max(sizes) if sizes else None


def cache_evictor(nbytes: int) -> Callable[[], None]:
    """Streams a buffer of `nbytes` through the caches: whatever a model had in them is gone,
    as on a phone, whose few MB of cache keep nothing of a 20 MB table between two
    recommendations (a server's last-level cache can hold the whole table)."""
    buffer = np.ones(max(nbytes, 1) // 8)

    def evict() -> None:
        np.add(buffer, 1.0, out=buffer)

    return evict


def round_robin(measures: Sequence[Measure], inputs: Sequence[Inputs], repeats: int,
                warmup: int, block: int = BLOCK, before: Callable[[], None] | None = None
                ) -> list[np.ndarray]:
    """Each measure's seconds [repeats, values] over the inputs (cycled; the same for every
    measure), after `warmup` untimed calls each.

    The measures take turns in blocks of `block` calls, each block after one untimed call: the
    turns expose every model to the same load, so their ratios hold on a busy machine, and the
    blocks keep each model's own data warm in the caches, as when it runs alone (taking turns
    call by call would have one model's table evict the next one's). `before`, if given, runs
    untimed before every timed call (a cache eviction)."""
    out: list[list[tuple[float, ...]]] = [[] for _ in measures]
    for measure in measures:
        for i in range(warmup):
            measure(inputs[i % len(inputs)])
    for lo in range(0, repeats, block):
        rounds = range(lo, min(lo + block, repeats))
        for measure, seconds in zip(measures, out):
            measure(inputs[rounds[0] % len(inputs)])  # back in the caches
            for i in rounds:
                if before is not None:
                    before()
                seconds.append(measure(inputs[i % len(inputs)]))
    return [np.asarray(seconds) for seconds in out]


@dataclass
class Prepared:
    """A candidate ready to time: its record entry, its eager model and every runtime's call."""

    entry: dict[str, Any]
    eager: DeployedRecommender
    calls: dict[str, Callable[[torch.Tensor, torch.Tensor], Any]]


@torch.no_grad()
def prepare_candidate(candidate: Candidate, inputs: dict[int, list[Inputs]], *,
                      runtimes: list[str], artefact_dir: Path, top_k: int, max_batch: int
                      ) -> Prepared:
    """The eager deployed model and its exports (checked against it), before any timing."""
    eager = DeployedRecommender(candidate.model, k=top_k).eval()
    entry: dict[str, Any] = {
        "label": candidate.label, "config": candidate.config.to_dict(),
        "source": candidate.source, "num_items": eager.num_items, "dim": eager.dim,
        "item_storage": candidate.model.compressor.storage().to_dict(),
        "runtimes": {EAGER: {"artefact": None, "batches": {}}}}
    calls: dict[str, Callable[[torch.Tensor, torch.Tensor], Any]] = {EAGER: eager}
    for fmt in runtimes:
        entry["runtimes"][fmt], run = _export_runtime(candidate, eager, fmt, inputs,
                                                      artefact_dir, top_k, max_batch)
        if run is not None:
            calls[fmt] = run
    return Prepared(entry, eager, calls)


def _export_runtime(candidate: Candidate, eager: DeployedRecommender, fmt: str,
                    inputs: dict[int, list[Inputs]], artefact_dir: Path, top_k: int,
                    max_batch: int) -> tuple[dict[str, Any], Callable | None]:
    """The runtime's entry (artefact, agreement with eager) and its call, or why there is none."""
    reason = missing_runtime(fmt)
    if reason:
        return {"skipped": reason}, None
    path = Path(artefact_dir) / f"{candidate.label}{SUFFIX[fmt]}"
    try:
        export(DeployedRecommender(candidate.model, k=top_k, exportable=True), fmt, path,
               max_batch=max_batch)
        run = load(fmt, path)
        first = {batch: batches[0] for batch, batches in inputs.items()}
        checks = {str(b): agreement(run(*x), eager(*x), top_k) for b, x in first.items()}
    except Exception as exc:  # an export a runtime cannot take is a result, not a crash
        first_line = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).splitlines()[0][:300]
        return {"failed": f"{type(exc).__name__}: {first_line}"}, None
    stored = artefact_tensors(fmt, path)
    return {
        "artefact": {"path": str(path), "bytes": path.stat().st_size,
                     "largest_tensor": None if not stored else
                     {"name": stored[0].name, "shape": stored[0].shape,
                      "bytes": stored[0].nbytes},
                     "may_hold_dense_table": holds_dense_table(fmt, path, eager.num_items,
                                                               eager.dim)},
        "agreement_with_eager": checks, "batches": {}}, run


@torch.no_grad()
def time_prepared(prepared: list[Prepared], inputs: dict[int, list[Inputs]], repeats: int,
                  warmup: int, before: Callable[[], None] | None = None) -> None:
    """Time every model in every runtime, end to end and (eager) by stage, all taking turns
    (`round_robin`) at each batch size; the summaries go into each model's entry."""
    for batch, batches in inputs.items():
        measures: list[Measure] = []
        slots: list[tuple[dict[str, Any], str]] = []
        for model in prepared:
            measures.append(lambda x, d=model.eager: stage_seconds(d, x))
            slots.append((model.entry, "stages"))
            for fmt, fn in model.calls.items():
                measures.append(lambda x, fn=fn: call_seconds(fn, x))
                slots.append((model.entry, fmt))
        timings = round_robin(measures, batches, repeats, warmup, before=before)
        for (entry, what), seconds in zip(slots, timings):
            runtime = EAGER if what == "stages" else what
            timing = entry["runtimes"][runtime]["batches"].setdefault(str(batch), {})
            if what == "stages":
                timing["stages"] = {name: _summary(seconds[:, i]) for i, name in enumerate(STAGES)}
            else:
                timing["end_to_end"] = _summary(seconds[:, 0])


def add_ratios(models: list[dict[str, Any]]) -> None:
    """Each model's median over `full`'s (same backbone, repeat head, runtime and batch), in
    place."""
    def family(config: dict[str, Any]) -> tuple[str, str | None]:
        return config["backbone"], repeat_head(config)

    for model in models:
        reference = next((m for m in models if m["config"]["compressor"] == "full"
                          and family(m["config"]) == family(model["config"])), None)
        if reference is None:
            continue
        for fmt, runtime in model["runtimes"].items():
            ref_runtime = reference["runtimes"].get(fmt, {})
            for batch, timing in runtime.get("batches", {}).items():
                ref = ref_runtime.get("batches", {}).get(batch)
                if ref:
                    timing["ratio_to_full"] = (timing["end_to_end"]["median_ms"]
                                               / ref["end_to_end"]["median_ms"])
            artefact, ref_artefact = runtime.get("artefact"), ref_runtime.get("artefact")
            if artefact and ref_artefact:
                artefact["size_ratio_full_over_this"] = ref_artefact["bytes"] / artefact["bytes"]


@restores_cpu_settings
def benchmark_latency(candidates: list[Candidate], data: SessionDataset, *,
                      runtimes: Sequence[str] = FORMATS, batches: Sequence[int] = (1, 100),
                      repeats: int = 100, warmup: int = 10, sessions: int = 1000,
                      top_k: int = 20, results_dir: Path = USER_RESULTS,
                      artefact_dir: Path = Path(".ecbench/artefacts"), threads: int = 1,
                      cache: str = "warm", log: Callable[[str], None] = print
                      ) -> tuple[dict[str, Any], Path]:
    """Time every candidate on `data`'s test sessions; write and return the latency record.

    Sessions: up to `sessions` test cases per batch size, the same for every model. `cache`:
    `warm` (each model's data left in the caches between calls, as when it runs alone on
    this machine) or `cold` (the caches emptied before every call, phone-like; see
    `cache_evictor`).
    """
    if cache not in CACHES:
        raise ValueError(f"cache must be one of {CACHES}, got {cache!r}")
    llc = last_level_cache_bytes()
    evict_bytes = max(2 * (llc or 0), 64 * 2**20)  # twice the last-level cache, 64 MB at least
    before = cache_evictor(evict_bytes) if cache == "cold" else None
    configure_cpu(threads)
    origin = provenance(threads)
    tag_alike(candidates)
    max_len = max(c.config.max_len for c in candidates)
    inputs = {b: timing_batches(data, b, max(1, min(sessions // b, repeats)), max_len)
              for b in batches}
    prepared = []
    for candidate in candidates:
        log(f"preparing {candidate.label}")
        prepared.append(prepare_candidate(candidate, inputs, runtimes=list(runtimes),
                                          artefact_dir=artefact_dir, top_k=top_k,
                                          max_batch=max(batches)))
    log(f"timing {len(prepared)} models, taking turns")
    time_prepared(prepared, inputs, repeats, warmup, before=before)
    models = [p.entry for p in prepared]
    add_ratios(models)
    result = {"benchmark": "latency", "dataset": {"name": data.name, "checksum": data.checksum,
                                                  "num_items": data.num_items},
              "protocol": {"threads": threads, "batches": list(batches), "repeats": repeats,
                           "warmup": warmup, "top_k": top_k, "sessions": "test set, seeded sample",
                           "runtimes": [EAGER, *runtimes], "block": BLOCK, "cache": cache,
                           "last_level_cache_bytes": llc,
                           "evicted_bytes": evict_bytes if cache == "cold" else None},
              "models": models, "provenance": origin, "date": now_iso()}
    labels = "+".join(sorted({c.config.compressor for c in candidates}))
    backbone_names = "+".join(sorted({c.config.backbone for c in candidates}))
    heads = "+".join(sorted({c.config.repeat_head for c in candidates} - {None}))
    path = (Path(results_dir) / "bench" /
            f"latency-{data.name.split('(')[0]}-{backbone_names}-{labels}"
            f"{f'-repeat-{heads}' if heads else ''}-t{threads}"
            f"{'-cold' if cache == 'cold' else ''}.json")
    write_json(path, result)
    return result, path
