"""The accuracy-bytes-latency frontier: every compressor trained to a byte budget (`--ratio`)
on one dataset, scored deployed (ties against it), beside the reference rows that need no
compressed table (the dense teacher, popularity, session recency, session-kNN).

Its first answer is which compressor is best at each budget. A point is a group of runs that
differ only by seed (mean, and the spread where there are several); every point of a table was
trained under the same epoch cap, said in the table. Latency is batch-1 end-to-end in each
runtime timed (eager, ONNX Runtime, ExecuTorch with one copy of the table and with XNNPACK's
packed copy), from the one latency record that timed the most of a table's points (ratios
hold within one process), as a multiple of the dense-table model timed in that same process
and runtime. A point that record lacks (trained after it) takes its cells, marked, from the
latest record that timed it beside a dense model of its own.
"""

from __future__ import annotations

import dataclasses
import statistics
from dataclasses import dataclass, field
from typing import Any, Iterable

from tabulate import tabulate

from ecbench.bench.errors import ConfigError
from ecbench.bench.report.paper_tables import mean_test, spread_test
from ecbench.bench.report.tables import seed_groups, variant
from ecbench.bench.training.config import RunConfig, repeat_head
from ecbench.bench.training.train import apply_budget

Record = dict[str, Any]
TARGETS = {"tmall": (4.0, 10.0, 30.0, 100.0), "retailrocket": (30.0,)}
REPEAT_BUDGET = 30.0  # the budget also run with the repeat-mixture head


@dataclass
class Point:
    """One compressor at one budget: its runs (seeds) and what they share."""

    compressor: str
    target: float
    head: str | None
    runs: list[Record] = field(default_factory=list)

    @property
    def label(self) -> str:
        options = self.runs[0]["config"]["compressor_options"]
        shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                          for k, v in sorted(options.items()))
        return f"{self.compressor} ({shown})" if shown else self.compressor

    def mean(self, metric: str) -> float:
        return mean_test(self.runs, metric)

    def spread(self, metric: str) -> float | None:
        return spread_test(self.runs, metric)

    @property
    def storage(self) -> dict[str, Any]:
        return self.runs[0]["size"]["item_storage"]

    @property
    def tied_percent(self) -> float | None:
        values = [r["deployed_table"]["test_labels_tied_percent"] for r in self.runs
                  if r.get("deployed_table")]
        return statistics.fmean(values) if values else None


def budgeted(record: Record) -> bool:
    """A frontier point's run: trained to a byte budget, undistilled, selected on validation."""
    config = record["config"]
    return (bool(config.get("ratio")) and config.get("distill") is None
            and record["selection"]["on"] == "validation")


def frontier_runs(records: Iterable[Record], data: str, epochs: int) -> list[Record]:
    """The runs a frontier of `data` is built from: budgeted, under the epoch cap `epochs`."""
    return [r for r in records if budgeted(r) and r["config"]["data"] == data
            and r["config"]["epochs"] == epochs]


def budget_fields(compressor: str) -> set[str]:
    """The options a compressor's `--ratio` budget sets (hash: buckets, pq: groups, ...): the
    fields its budget changes at two ratios, on a probe shape. Empty for a compressor not
    registered here (a plugin's record rendered without its package)."""
    from ecbench import compressors

    try:
        entry = compressors.registry.get(compressor)
    except compressors.UnknownEntryError:
        return set()
    if entry.budget is None:
        return set()
    default, changed = entry.default_config(), set()
    for ratio in (4.0, 30.0):
        try:
            chosen = entry.budget(default, 10_001, 64, ratio)
        except ValueError:
            continue
        changed |= {f.name for f in dataclasses.fields(chosen)
                    if getattr(chosen, f.name) != getattr(default, f.name)}
    return changed


def requested_options(config: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    """A budgeted run's own choice of options: those its budget did not set."""
    chosen = budget_fields(config["compressor"])
    return tuple(sorted((k, v) for k, v in config["compressor_options"].items()
                        if k not in chosen))


def points(runs: Iterable[Record]) -> list[Point]:
    """Runs grouped by compressor (and the options asked of it), budget and head, seeds
    together."""
    grouped: dict[tuple, Point] = {}
    for r in runs:
        c = r["config"]
        key = (c["compressor"], requested_options(c), float(c["ratio"]), repeat_head(c),
               c["backbone"], c["dim"])
        point = grouped.setdefault(key, Point(c["compressor"], float(c["ratio"]), repeat_head(c)))
        point.runs.append(r)
    return sorted(grouped.values(), key=lambda p: (p.target, p.head or "", -p.mean("HR@10")))


RUNTIME_NAMES = {"eager": "eager", "onnx": "ONNX Runtime", "executorch": "ExecuTorch",
                 "executorch-packed": "ExecuTorch, weights packed at load"}


@dataclass
class Timings:
    """One runtime's batch-1 end-to-end median ms by run key, and the dense model's."""

    ms: dict[str, float] = field(default_factory=dict)
    dense: float | None = None

    def cell(self, point: Point) -> str:
        values = [self.ms[r["key"]] for r in point.runs if r["key"] in self.ms]
        if not values:
            return "not timed"
        median = statistics.median(values)
        return f"{median:.2f}" + (f" ({median / self.dense:.2f}x)" if self.dense else "")


def timed_keys(record: Record) -> set[str]:
    """The run keys a latency record timed."""
    return {m.get("source", {}).get("key") for m in record["models"]} - {None}


def latency_of(latency_records: Iterable[Record], keys: set[str]
               ) -> tuple[dict[str, Timings], Record | None]:
    """Each runtime's batch-1 timings (`RUNTIME_NAMES` order), from the one latency record that
    timed the most of `keys` (the latest among equals): ratios hold within one process."""
    best, best_rank = None, None
    for record in latency_records:
        timed = timed_keys(record) & keys
        rank = (len(timed), record.get("date", ""))
        if timed and (best_rank is None or rank >= best_rank):
            best, best_rank = record, rank
    if best is None:
        return {}, None
    return runtime_timings(best), best


def runtime_timings(record: Record) -> dict[str, Timings]:
    """A latency record's batch-1 timings by runtime, in `RUNTIME_NAMES` order."""
    runtimes: dict[str, Timings] = {}
    for model in record["models"]:
        for runtime, timing in model["runtimes"].items():
            cell = timing.get("batches", {}).get("1")
            if not cell:
                continue
            value = cell["end_to_end"]["median_ms"]
            timings = runtimes.setdefault(runtime, Timings())
            if model["config"]["compressor"] == "full" and not model["config"].get("ratio"):
                timings.dense = value
            key = model.get("source", {}).get("key")
            if key:
                timings.ms[key] = value
    order = list(RUNTIME_NAMES)
    return dict(sorted(runtimes.items(), key=lambda kv: (order.index(kv[0]) if kv[0] in order
                                                         else len(order), kv[0])))


def timings_elsewhere(latency_records: Iterable[Record], primary: Record | None,
                      keys: set[str]) -> dict[str, tuple[Record, dict[str, Timings]]]:
    """For each of `keys` that the primary record did not time, the latest other record that
    did, with its timings: such a point is shown against the dense model of its own process
    (a model trained after the primary timing, whose points' weights are gone, still gets
    its cells)."""
    missing = keys - (timed_keys(primary) if primary is not None else set())
    found: dict[str, tuple[Record, dict[str, Timings]]] = {}
    for record in sorted(latency_records, key=lambda r: r.get("date", ""), reverse=True):
        if record is primary:
            continue
        here = (timed_keys(record) & missing) - found.keys()
        if here:
            timings = runtime_timings(record)
            found.update({key: (record, timings) for key in here})
    return found


ELSEWHERE_MARK = "†"


def latency_cells(point: Point, runtimes: dict[str, Timings],
                  elsewhere: dict[str, tuple[Record, dict[str, Timings]]]) -> list[str]:
    """A point's cell in each runtime's column: from the primary record, else (marked) from
    the record that timed it in another process."""
    other = next((elsewhere[r["key"]][1] for r in point.runs if r["key"] in elsewhere), {})
    cells = []
    for runtime, timings in runtimes.items():
        if not any(r["key"] in timings.ms for r in point.runs) and runtime in other:
            cells.append(f"{other[runtime].cell(point)} {ELSEWHERE_MARK}")
        else:
            cells.append(timings.cell(point))
    return cells or ["not timed"]


def timing_line(record: Record) -> str:
    return (f"one process, {record['provenance']['machine']['cpu']}, "
            f"{record['protocol']['threads']} thread(s), {record['date']}")


def _cell(point: Point, metric: str) -> str:
    spread = point.spread(metric)
    return f"{point.mean(metric):.2f}" + (f" ± {spread:.2f}" if spread is not None else "")


def model_free_source(records: Iterable[Record], data: str, teachers: list[Record]
                      ) -> Record | None:
    """The record whose model-free rankings (popularity, session recency) the table shows.

    They depend on the data alone, so any record of the same split serves: the one holding the
    most of them (a teacher trained before a ranking was added holds fewer), a teacher first.
    A record of another version of the data (another checksum than the teachers') never does."""
    checksums = {t["dataset"]["checksum"] for t in teachers}
    same_data = [r for r in records if r["config"]["data"] == data and r.get("baselines")
                 and (not checksums or r["dataset"]["checksum"] in checksums)]
    if not same_data:
        return None
    teacher_ids = {id(t) for t in teachers}
    return max(same_data, key=lambda r: (len(r["baselines"]), id(r) in teacher_ids, r["finished"]))


def reference_rows(records: Iterable[Record], knn: Iterable[Record], data: str
                   ) -> list[list[Any]]:
    """The dense teacher, the model-free rankings (`model_free_source`) and session-kNN."""
    rows, records = [], list(records)
    teachers = [r for r in records if r["config"]["data"] == data
                and (r["config"]["backbone"], r["config"]["compressor"]) == ("sasrec", "full")
                and variant(r["config"]) == "-" and r["selection"]["on"] == "validation"]
    for group in seed_groups(teachers):  # one row per setting: the seeds of one epoch cap
        size = group[0]["size"]["item_storage"]
        rows.append([f"dense SASRec (at most {group[0]['config']['epochs']} epochs; "
                     f"{len(group)} seed(s))",
                     mean_test(group, "HR@10"), mean_test(group, "NDCG@10"),
                     size["total_bytes"] / 1024, 1.0, ", ".join(x["key"] for x in group)])
    fullest = model_free_source(records, data, teachers)
    if fullest is not None:
        for name, metrics in fullest["baselines"].items():
            rows.append([f"{name} (no table)", metrics["HR@10"], metrics["NDCG@10"], 0.0, None,
                         fullest["key"]])
    for k in knn:
        if k["dataset"]["name"] != data:
            continue
        s = k["storage"]
        rows.append([f"{k['method'].upper()} (k={k['config']['k']}, sample="
                     f"{k['config']['sample']}; stores past sessions)",
                     k["test"]["HR@10"], k["test"]["NDCG@10"], s["total_bytes"] / 1024,
                     s["byte_ratio"], k["key"]])
    return rows


def frontier_table(records: list[Record], knn: list[Record], latency: list[Record], data: str,
                   epochs: int) -> str:
    """The frontier of `data` as markdown: the best compressor at each budget first, then
    every point, then the reference rows."""
    pts = points(frontier_runs(records, data, epochs))
    keys = {r["key"] for p in pts for r in p.runs}
    runtimes, timing = latency_of(latency, keys)
    elsewhere = timings_elsewhere(latency, timing, keys)
    cap = f"at most {epochs} epochs, " if epochs else ""
    lines = [f"# Accuracy, bytes and latency on {data} (every point: {cap}selected on "
             "validation, scored deployed with ties against it)", ""]
    if not pts:
        lines += [f"No budgeted runs yet: `ecbench frontier --data {data}` trains them.", ""]
    best = {}
    for p in pts:
        group = (p.target, p.head)
        if group not in best or p.mean("HR@10") > best[group].mean("HR@10"):
            best[group] = p
    if best:
        lines += ["Best deployed HR@10 at each budget:", ""]
        lines += [f"- {target:g}x{f' (repeat {head} head)' if head else ''}: " + (
                  f"**{p.label}**, HR@10 {_cell(p, 'HR@10')}, "
                  f"{p.storage['total_bytes'] / 1024:.0f} KiB" if p.mean("HR@10") > 0 else
                  "none: every point scores 0 HR@10 (a best among them would be a tie)")
                  for (target, head), p in sorted(best.items(), key=lambda x: (x[0][0],
                                                                               x[0][1] or ""))]
        lines.append("")
    rows = [[f"{p.target:g}x" + (f" + repeat {p.head}" if p.head else ""), p.label,
             _cell(p, "HR@10"), _cell(p, "NDCG@10"),
             "" if p.tied_percent is None else f"{p.tied_percent:.1f}",
             f"{p.storage['total_bytes'] / 1024:.0f}", f"{p.storage['byte_ratio']:.1f}",
             *latency_cells(p, runtimes, elsewhere), len(p.runs),
             ", ".join(r["key"] for r in p.runs)]
            for p in pts]
    if rows:
        latency_headers = ([f"{RUNTIME_NAMES.get(r, r)} batch-1 ms (x dense)" for r in runtimes]
                           or ["batch-1 ms (x dense)"])
        lines.append(tabulate(rows, headers=["budget", "compressor", "HR@10", "NDCG@10",
                                             "tied %", "KiB stored", "byte ratio",
                                             *latency_headers,
                                             "seeds", "records"],
                              tablefmt="github"))
        lines.append("")
    references = reference_rows(records, knn, data)
    if references:
        lines.append(tabulate([[n, f"{h:.2f}", f"{g:.2f}", f"{kib:.0f}",
                                "" if ratio is None else f"{ratio:.1f}", key]
                               for n, h, g, kib, ratio, key in references],
                              headers=["reference (not compressed tables)", "HR@10", "NDCG@10",
                                       "KiB stored", "byte ratio", "record"],
                              tablefmt="github"))
        lines.append("")
    lines += not_yet_run(pts, data)
    if timing is not None:
        lines.append(f"Latency: {timing_line(timing)}.")
    used = {id(record): record for record, _ in elsewhere.values()}
    if used:  # only ever beside a primary record: it is the one that timed the most points
        lines.append(f"{ELSEWHERE_MARK} Timed in another process, as a multiple of the dense "
                     "model timed in that process: "
                     + "; ".join(timing_line(r) for r in used.values()) + ".")
    return "\n".join(lines)


def budgeted_names() -> list[str]:
    """Every registered compressor that can meet a byte budget (plugins included), but the
    dense reference."""
    from ecbench import compressors

    return [n for n in compressors.registry.names()
            if compressors.registry.get(n).budget is not None and n != "full"]


def not_yet_run(pts: list[Point], data: str) -> list[str]:
    """A line naming the default frontier's points (every budgeted compressor at each of
    `data`'s budgets it reaches, and with the repeat-mixture head at `REPEAT_BUDGET`) with no
    record here, at any options; none when nothing is recorded to compare with. A budget is
    reached as `ecbench frontier` decides it: by `apply_budget` on the recorded run's config."""
    if not pts:
        return []
    shape = pts[0].runs[0]
    base = RunConfig.from_record(shape, shape.get("key", "a frontier record"))
    num_items = shape["dataset"]["num_items"]
    recorded = {(p.compressor, p.target, p.head) for p in pts}
    missing = []
    for target in TARGETS.get(data, (REPEAT_BUDGET,)):
        for name in budgeted_names():
            config = dataclasses.replace(base, compressor=name, compressor_options={},
                                         ratio=target)
            try:
                apply_budget(config, num_items)
            except ConfigError:
                continue
            for head in (None, "mixture") if target == REPEAT_BUDGET else (None,):
                if (name, target, head) not in recorded:
                    missing.append(f"{name} at {target:g}x" + (" with the repeat-mixture head"
                                                                 if head else ""))
    if not missing:
        return []
    return [f"Not run yet (`ecbench frontier --data {data}` runs what is missing): "
            + "; ".join(missing) + ".", ""]


def frontier_series(records: list[Record], data: str, epochs: int
                    ) -> dict[str, list[tuple[float, float, float | None]]]:
    """Compressor (and head) -> [(stored bytes, mean HR@10, its spread)] for the plot."""
    series: dict[str, list[tuple[float, float, float | None]]] = {}
    for p in points(frontier_runs(records, data, epochs)):
        asked = requested_options(p.runs[0]["config"])
        name = (p.compressor + "".join(f" {k}={v}" for k, v in asked)
                + (f" + repeat {p.head}" if p.head else ""))
        series.setdefault(name, []).append((float(p.storage["total_bytes"]), p.mean("HR@10"),
                                            p.spread("HR@10")))
    return {k: sorted(v) for k, v in series.items()}


def frontier_figure(records: list[Record], knn: list[Record], data: str, epochs: int
                    ) -> dict[str, bytes]:
    """frontier-DATA.svg and .pdf: deployed HR@10 against stored bytes (log scale), one line
    per compressor through its budgets, the reference rows as marked points."""
    from ecbench.bench.report.plots import figure_files, scatter_chart

    series = frontier_series(records, data, epochs)
    if not series:
        return {}
    marks = [(row[0], row[3] * 1024, row[1]) for row in reference_rows(records, knn, data)
             if row[3] > 0]
    figure = scatter_chart(f"Deployed accuracy against stored bytes on {data} "
                           f"(at most {epochs} epochs a point)", series, marks,
                           xlabel="item storage on the device (bytes, log scale)",
                           ylabel="HR@10 (deployed, ties against it)")
    return figure_files(f"frontier-{data}", figure)


def frontier_views(records: Iterable[Record], knn: Iterable[Record]) -> list[tuple[str, int]]:
    """(dataset, epoch cap) of each frontier the records support: a dataset with budgeted runs
    (the cap most of its points share, the smaller among equals) or session-kNN records."""
    caps: dict[str, dict[int, int]] = {}
    for r in filter(budgeted, records):
        count = caps.setdefault(r["config"]["data"], {})
        count[r["config"]["epochs"]] = count.get(r["config"]["epochs"], 0) + 1
    views = {data: min(count, key=lambda e: (-count[e], e)) for data, count in caps.items()}
    for k in knn:
        views.setdefault(k["dataset"]["name"], 0)
    return sorted(views.items())
