"""The paper's Tables 3 and 4 and its ablation (Fig. 3), ours beside its numbers.

Pure functions of run records. A cell takes only honest runs at the paper's general settings:
selected on validation, scored with the deployed (compressed) table, not refit, without a
repeat head (a model beyond the paper's), with the dataset's preset dimension, batch,
learning rate, L2 and length (and the preset options of the SASRec backbone). Where several
configurations qualify for one cell (say a compressor option or a distillation schedule), the
one with the best mean validation score wins, never the best test score; its seeds are
averaged. The paper selected on test, so its numbers are references.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable

import numpy as np
from tabulate import tabulate

from ecbench.bench.training.config import RunConfig, backbone_preset, preset_for, repeat_head
from ecbench.bench.report.paper import (FIG3_GAIN_PERCENT, STUDENT_CODES, TABLE3, TABLE3_METRICS,
                                        TABLE3_RATIO, TABLE4)
from ecbench.bench.report.tables import TRAINING_DEFAULTS, departures_from_paper, seed_groups, variant

Record = dict[str, Any]
DATASETS = ("tmall", "retailrocket")
ABLATIONS = ("Stu-base", "Stu-w/o-c", "Stu-w/o-b", "Stu-w/o-s", "Stu-w/o-m", "Student")
ABLATION_METRICS = ("HR@5", "NDCG@5", "HR@10", "NDCG@10", "HR@20", "NDCG@20")
# OD-Rec's row: an sttd table "compressed to the same degree" as the student, within this factor
RATIO_TOLERANCE = 1.2


SELECTION = {"select_metric": "NDCG@10", "val_split": "random", "val_fraction": 0.1}


def at_paper_settings(record: Record) -> bool:
    """An honest run at the paper's general settings for its dataset (see the module doc)."""
    config, dataset = record["config"], record["dataset"]["name"]
    if (config["select_on"] != "validation" or config.get("refit")
            or config.get("dropout_epochs") is not None or repeat_head(config)
            or config["compressor_options"].get("eval_table") == "mixed"):
        return False
    general = {**TRAINING_DEFAULTS, "dim": preset_for(dataset).get("dim", config["dim"])}
    if any(config.get(name) != value for name, value in general.items()):
        return False
    # one selection protocol for every cell, so that best_on_validation compares like scores
    if any(config.get(name, value) != value for name, value in SELECTION.items()):
        return False
    # exactly the preset: no preset value changed, no other backbone option given
    return config["backbone_options"] == backbone_preset(dataset, config["backbone"])


def without_protocol(config: dict[str, Any]) -> dict[str, Any]:
    """The same run config selected on validation and scored with the deployed table."""
    options = {k: v for k, v in config["compressor_options"].items() if k != "eval_table"}
    return {**config, "select_on": "validation", "compressor_options": options}


def epoch_capped(record: Record) -> bool:
    """Trained under an epoch cap below its dataset's preset (a frontier point's `--epochs 3`,
    say): early stopping did not end it, so a cell named after the paper's training does not
    take it (`ecbench frontier` shows it, with its cap)."""
    preset = preset_for(record["dataset"]["name"]).get("epochs", RunConfig.epochs)
    return record["config"].get("epochs", preset) < preset


def in_paper_cell(record: Record) -> bool:
    """A run that a cell of the paper's Tables 3 and 4 or Fig. 3 may take: at the paper's
    settings and trained without a lower epoch cap (Table 3's legacy column: `on_paper_protocol`)."""
    return at_paper_settings(record) and not epoch_capped(record)


def at_paper_settings_but_protocol(record: Record) -> bool:
    """At the paper's general settings (`at_paper_settings`), whatever its protocol."""
    return at_paper_settings({**record, "config": without_protocol(record["config"])})


def in_paper_cell_but_protocol(record: Record) -> bool:
    """`in_paper_cell` whatever its protocol: the paper's protocol column and the protocol gap."""
    return at_paper_settings_but_protocol(record) and not epoch_capped(record)


def legacy_parts(config: dict[str, Any]) -> tuple[bool, bool]:
    """(selected on test, scored with the mixed table): the two habits of the paper's protocol."""
    return (config["select_on"] == "test",
            config["compressor_options"].get("eval_table") == "mixed")


def on_paper_protocol(record: Record) -> bool:
    """A legacy run of the paper's protocol: each metric's best test epoch, and a student
    scored with the teacher's table mixed in (`--select-on test`, `--eval-table mixed`)."""
    on_test, mixed = legacy_parts(record["config"])
    return (on_test and (record["config"]["compressor"] != "ccode" or mixed)
            and in_paper_cell_but_protocol(record))


def ablation_of(config: dict[str, Any]) -> str | None:
    """The paper's name for a ccode student's training: Stu-base (no distillation), one of the
    four single ablations of Fig. 3, the full Student, or None for any other combination."""
    distill = config.get("distill")
    if distill is None:
        return "Stu-base"
    off = [name for name, key in (("c", "contrastive"), ("b", "bidirectional"), ("s", "soft"))
           if not distill[key]]
    if distill["eta"] == 0:
        off.append("m")
    if not off:
        return "Student"
    return f"Stu-w/o-{off[0]}" if len(off) == 1 else None


def ccode_shape(config: dict[str, Any]) -> tuple[int, int]:
    from ecbench.compressors.ccode import CCodeConfig
    options = config["compressor_options"]
    return options.get("M", CCodeConfig.M), options.get("K", CCodeConfig.K)


def table3_model(record: Record) -> str | None:
    """The row of Table 3 a record can fill, if any."""
    config = record["config"]
    backbone, compressor = config["backbone"], config["compressor"]
    if compressor == "full":
        return {"gru4rec": "GRU4Rec", "narm": "NARM", "stamp": "STAMP", "srgnn": "SR-GNN",
                "sasrec": "Teacher"}.get(backbone)
    if backbone != "sasrec":
        return None
    if compressor == "sttd":
        ratio = record["size"]["item_storage"]["byte_ratio"]  # what a phone stores
        close = TABLE3_RATIO / RATIO_TOLERANCE <= ratio <= TABLE3_RATIO * RATIO_TOLERANCE
        return "OD-Rec" if close else None
    model = student_ablation(record)
    if model not in ("Stu-base", "Student"):
        return None
    return variant_name(model, record["config"])


def variant_name(name: str, config: dict[str, Any]) -> str:
    """`name` (Stu-base, Student, ...) for the paper's method; for a variant of ours, labelled
    with how it departs from the paper's method."""
    departures = departures_from_paper(config)
    return name if not departures else f"{name}, ours: {', '.join(departures)}"


def student_ablation(record: Record) -> str | None:
    """`ablation_of` a SASRec ccode run with the paper's student codes for its dataset."""
    config = record["config"]
    if (config["backbone"], config["compressor"]) != ("sasrec", "ccode"):
        return None
    if ccode_shape(config) != STUDENT_CODES.get(record["dataset"]["name"]):
        return None
    return ablation_of(config)


def best_on_validation(records: Iterable[Record]) -> list[Record]:
    """The seeds of the configuration with the best mean validation score at its selected
    epochs (each run's own selection metric); empty if there are none."""
    groups = seed_groups(records)
    return max(groups, key=validation_score) if groups else []


def validation_score(runs: list[Record]) -> float:
    """The seeds' mean validation score at their selected epochs (each run's own metric)."""
    return float(np.mean([r["validation_at_selected"][r["config"]["select_metric"]]
                          for r in runs]))


def _cells(records: Iterable[Record], row_of: Callable[[Record], Any]
           ) -> dict[tuple[Any, str], list[Record]]:
    """(row, dataset) -> the winning runs, over the honest records that `row_of` places."""
    candidates: dict[tuple[Any, str], list[Record]] = {}
    for record in records:
        if not in_paper_cell(record):
            continue
        row = row_of(record)
        if row is not None:
            candidates.setdefault((row, record["dataset"]["name"]), []).append(record)
    return {key: best_on_validation(runs) for key, runs in candidates.items()}


def mean_test(runs: list[Record], metric: str) -> float:
    """The runs' (seeds') mean test `metric`."""
    return float(np.mean([r["test"][metric] for r in runs]))


def spread_test(runs: list[Record], metric: str) -> float | None:
    """The sample standard deviation of the runs' (seeds') test `metric`; None for one run."""
    if len(runs) < 2:
        return None
    return float(np.std([r["test"][metric] for r in runs], ddof=1))


def mean_of(runs: list[Record], value: Callable[[Record], float | None]) -> float | None:
    """The runs' mean of `value`, over the runs that hold one (None if none does)."""
    values = [v for v in map(value, runs) if v is not None]
    return float(np.mean(values)) if values else None


def _count(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _beside(ours: float | None, paper: float | None, spread: float | None = None) -> str:
    """Ours (± the spread over seeds, where several) beside the paper's in brackets."""
    mine = "-" if ours is None else f"{ours:.2f}" + (f" ± {spread:.2f}" if spread else "")
    return mine if paper is None else f"{mine} ({paper:.2f})"


def _seconds_per_epoch(runs: list[Record]) -> float:
    return float(np.median([r["timing"]["train_seconds_per_epoch_median"] for r in runs]))


# The config fields that set what a training epoch costs: a training benchmark that matches a
# run on all of them (and on distilling or not) timed that run's training
COST_FIELDS = ("backbone", "compressor", "compressor_options", "backbone_options", "dim",
               "batch_size", "max_len", "precision")


def _times_the_same_training(benchmark: Record, run: Record) -> bool:
    bench_config, config = benchmark["config"], run["config"]
    return (benchmark["dataset"] == run["dataset"]["name"]
            and all(bench_config.get(f) == config.get(f) for f in COST_FIELDS)
            and (bench_config.get("distill") is None) == (config.get("distill") is None))


def training_cost(runs: list[Record], train_benchmarks: Iterable[Record]) -> str:
    """A cell's seconds per training epoch: from the one-thread CPU `ecbench bench train`
    record of the same training that timed the most steps (the newest among those), with its
    cost relative to the teacher timed in the same process; else the runs' own median epoch,
    starred (wall clock, on a machine that may have been shared with other runs)."""
    matching = [b for b in train_benchmarks if _times_the_same_training(b, runs[0])
                and b.get("provenance", {}).get("machine", {}).get("torch_threads") == 1
                and b.get("device", {}).get("type", "cpu") == "cpu"]
    if not matching:
        return f"{_seconds_per_epoch(runs):.0f}*"
    measured = max(matching, key=lambda b: (b["measurements"]["timed_steps"],
                                            b["date"]))["measurements"]
    relative = measured.get("cost_vs_teacher")
    return (f"{measured['seconds_per_epoch']:.0f}"
            + ("" if relative is None else f" ({relative:.2f}x)"))


def _sources(cells: dict[tuple[Any, str], list[Record]], label: Callable[[Any], str]) -> str:
    """Which records fill which cells: the footnote that makes every number traceable."""
    lines = []
    for (row, dataset), runs in sorted(cells.items(), key=lambda kv: (kv[0][1], str(kv[0][0]))):
        keys = ", ".join(r["key"] for r in runs)
        lines.append(f"- {dataset} {label(row)}: {variant(runs[0]['config'])}; "
                     f"{len(runs)} seed(s); {_seconds_per_epoch(runs):.0f} s an epoch of wall clock; "
                     f"records {keys}")
    return "\n".join(lines)


HEADLINE_METRICS = ("HR@10", "NDCG@10")


def _with_variants(paper: dict[str, Any], cells: dict[tuple[Any, str], list[Record]]
                   ) -> list[tuple[str, Any]]:
    """The paper's rows with its values, then a row per variant of ours that the records hold
    (no paper value)."""
    extra = sorted({row for row, _ in cells if row not in paper})
    return [*paper.items(), *((row, None) for row in extra)]


def _table3_rows(cells: dict[tuple[Any, str], list[Record]], metrics: tuple[str, ...]
                 ) -> list[list[Any]]:
    """Table 3's rows (the paper's models, then our variants), each dataset's `metrics` as
    ours (the paper's)."""
    rows = []
    for model, paper in _with_variants(TABLE3, cells):
        row: list[Any] = [model]
        for dataset in DATASETS:
            runs = cells.get((model, dataset))
            row += [_beside(mean_test(runs, m) if runs else None,
                            paper[dataset][TABLE3_METRICS.index(m)] if paper else None,
                            spread_test(runs, m) if runs else None)
                    for m in metrics]
        rows.append(row)
    return rows


def headline_table(records: Iterable[Record]) -> str:
    """The README's headline: Table 3's rows at @10 on both datasets, ours (the paper's), with
    the number of seeds behind each of ours; the records are named in results/tables/table3.md."""
    cells = _cells(records, table3_model)
    headers = ["model"] + [f"{name} {m}" for d, name in zip(DATASETS, ("Tmall", "RetailRocket"))
                           for m in HEADLINE_METRICS] + ["seeds"]
    # the paper's rows, its method's Stu-base, and our Student variants (Table 3 has the rest)
    rows = [row + [" / ".join(str(len(cells.get((row[0], d)) or [])) for d in DATASETS)]
            for row in _table3_rows(cells, HEADLINE_METRICS)
            if row[0] in TABLE3 or row[0] == "Stu-base" or row[0].startswith("Student")]
    return (tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)
            + "\n\nTest HR@10 and NDCG@10 in percent: ours, selected on validation and scored "
            "in the deployed form (the compressed table alone, ties counted against the "
            "model), beside the paper's in brackets (selected on test; its students scored "
            "with the teacher's table mixed in). Seeds: Tmall / RetailRocket; - = not yet "
            "run. Rendered by `ecbench tables` from the curated records.")


def table3(records: Iterable[Record], fmt: str = "github",
           train_benchmarks: Iterable[Record] = ()) -> str:
    """Table 3: every method on both datasets, test metrics in percent, ours (paper's), and
    each one's training cost (`training_cost`)."""
    records = list(records)
    cells = _cells(records, table3_model)
    legacy = legacy_cells(records)
    train_benchmarks = list(train_benchmarks)
    headers = ["model"] + [f"{d} {m}" for d in DATASETS for m in TABLE3_METRICS]
    headers += [f"{d} HR@10 / NDCG@10, paper's protocol (legacy)" for d in DATASETS]
    headers += [f"{d} s/epoch" for d in DATASETS]
    rows = []
    for row in _table3_rows(cells, TABLE3_METRICS):
        model = row[0]
        for dataset in DATASETS:
            runs = legacy.get((model, dataset))
            row.append(" / ".join(_beside(mean_test(runs, m), None, spread_test(runs, m))
                                  for m in HEADLINE_METRICS) if runs else None)
        for dataset in DATASETS:
            runs = cells.get((model, dataset))
            row.append(training_cost(runs, train_benchmarks) if runs else None)
        rows.append(row)
    return ("Table 3: test metrics in percent, ours ± their standard deviation over seeds "
            "(the paper's, selected on test); ours are selected on validation and scored with "
            "the deployed table. The paper's protocol (legacy, labelled): each metric's best "
            "test epoch, a student scored with the teacher's table mixed in, from runs of "
            "`--select-on test --eval-table mixed`. s/epoch: `ecbench "
            "bench train` at one thread, in brackets its cost relative to the teacher timed "
            "in the same process; * where no benchmark was run, the run's own median epoch "
            "(wall clock, possibly beside other runs)\n\n"
            + tabulate(rows, headers=headers, floatfmt=".0f", tablefmt=fmt, missingval="-",
                       disable_numparse=True)
            + "\n\n" + _sources(cells, str))


def legacy_cells(records: Iterable[Record]) -> dict[tuple[Any, str], list[Record]]:
    """(Table 3 row, dataset) -> the legacy runs of the paper's protocol that fill it (the
    seeds of the row's configuration, its protocol aside)."""
    cells: dict[tuple[Any, str], list[Record]] = {}
    for record in records:
        if not on_paper_protocol(record):
            continue
        row = table3_model({**record, "config": without_protocol(record["config"])})
        if row is not None:
            cells.setdefault((row, record["dataset"]["name"]), []).append(record)
    return {key: max(seed_groups(runs), key=len) for key, runs in cells.items()}


def _table4_cell(record: Record) -> tuple[tuple[int, int], str] | None:
    """((M, K), training): training is Stu-base or Student, labelled where it is a variant.
    A run whose shape a byte budget chose (`--ratio`) is a frontier point, not a cell here."""
    config = record["config"]
    if config["backbone"] != "sasrec" or config["compressor"] != "ccode" or config.get("ratio"):
        return None
    name = ablation_of(config)
    if name not in ("Stu-base", "Student"):
        return None
    return ccode_shape(config), variant_name(name, config)


def table4_cells(records: Iterable[Record]
                 ) -> dict[tuple[tuple[tuple[int, int], str], str], list[Record]]:
    """(((M, K), training), dataset) -> the winning ccode runs of that shape and training."""
    return _cells(records, _table4_cell)


def table4(records: Iterable[Record], fmt: str = "github") -> str:
    """Table 4: ccode students by (M, K), their Eq. 11 and byte ratios, ours (paper's)."""
    cells = table4_cells(records)
    rows = []
    for ((codes, training), dataset), runs in sorted(
            cells.items(), key=lambda kv: (kv[0][1], kv[0][0][0], ", ours" in kv[0][0][1],
                                           kv[0][0][1])):
        paper = TABLE4.get(dataset, {}).get(codes)
        storage = runs[0]["size"]["item_storage"]
        table = [r.get("deployed_table") or {} for r in runs]
        rows.append([dataset, *codes, _beside(storage["paper_ratio"], paper and paper[0]),
                     storage["byte_ratio"], training,
                     *(_beside(mean_test(runs, m), paper and paper[1 + i])
                       for i, m in enumerate(TABLE3_METRICS)),
                     *(_beside(mean_of(runs, lambda r, m=m: (r.get("test_mixed_table")
                                                             or {}).get(m)), None)
                       for m in ("HR@10", "NDCG@10")),
                     _count(mean_of(table, lambda t: t.get("distinct_item_vectors"))),
                     _beside(mean_of(table, lambda t: t.get("test_labels_tied_percent")), None)])
    covered = {d: len({codes for (codes, training), dataset in cells
                       if dataset == d and ", ours" not in training and codes in TABLE4[d]})
               for d in DATASETS}
    coverage = "; ".join(f"{d}: {covered[d]} of the paper's {len(TABLE4[d])} (M, K)"
                         for d in DATASETS)
    return ("Table 4: ccode students by codebook shape, test metrics in percent, ours (the "
            f"paper's); the paper's method covers {coverage}; rows marked ours are variants. "
            "Ours are the deployed table's; 'mixed' the same models scored the paper's way "
            "(the teacher's table mixed in; legacy); 'distinct' the item vectors the deployed "
            "table tells apart, 'tied %' the test labels that tie with another item (ranked "
            "against the model); - where a record predates them\n\n"
            + tabulate(rows, headers=["data", "M", "K", "Eq. 11 ratio", "byte ratio", "training",
                                      *TABLE3_METRICS, "mixed HR@10", "mixed NDCG@10",
                                      "distinct", "tied %"],
                       floatfmt=".1f", tablefmt=fmt, missingval="-")
            + "\n\n" + _sources(cells, lambda cell: f"M={cell[0][0]} K={cell[0][1]} {cell[1]}"))


def ablation_families(records: Iterable[Record], variants: bool = False
                      ) -> list[tuple[str, list[Record], dict[str, list[Record]]]]:
    """Fig. 3's groups: (dataset, a Stu-base's seeds, ablation name -> the winning runs among
    the students distilled from that Stu-base).

    A student is compared only with the training of the pretrained student it was distilled
    from (its record's `pretrained` snapshot: key and test metrics), never with another Stu-base
    that happens to score better, nor with a later rerun of the same settings, whose record
    replaces the earlier one under the same key. Students of a training whose record is gone
    keep it as their own records saw it (`_earlier_training`). Every Stu-base that has distilled
    students forms a group, recorded trainings first, the best on validation first; a dataset
    with no distilled student shows its best Stu-base alone. `variants`: the families of our
    variants of the method (`departures_from_paper`) instead of the paper's.
    """
    placed = [(name, record) for record in records
              if in_paper_cell(record) and (name := student_ablation(record)) is not None
              and bool(departures_from_paper(record["config"])) == variants]
    bases = seed_groups(r for name, r in placed if name == "Stu-base")
    students: dict[int, dict[str, list[Record]]] = {}
    for name, record in placed:
        snapshot = record.get("pretrained") or {}
        if name == "Stu-base" or not snapshot:
            continue
        family = next((i for i, runs in enumerate(bases)
                       if any(_distilled_from(snapshot, base) for base in runs)), None)
        if family is None and "test" in snapshot:
            bases.append([_earlier_training(snapshot, record)])
            family = len(bases) - 1
        if family is not None:
            students.setdefault(family, {}).setdefault(name, []).append(record)
    families = []
    for dataset in DATASETS:
        own = [i for i, runs in enumerate(bases) if runs[0]["dataset"]["name"] == dataset]
        distilled = [i for i in own if i in students]
        shown = sorted(distilled or own, key=lambda i: _family_order(bases[i]))
        for i in shown if distilled else shown[:1]:
            named = {name: best_on_validation(runs) for name, runs in students.get(i, {}).items()}
            families.append((dataset, bases[i], named))
    return families


def _distilled_from(snapshot: dict[str, Any], base: Record) -> bool:
    """Whether a student's `pretrained` snapshot is this training of its Stu-base: the same key
    and the same test metrics (a snapshot without them matches by key)."""
    return snapshot["key"] == base["key"] and snapshot.get("test", base["test"]) == base["test"]


def _earlier_training(snapshot: dict[str, Any], student: Record) -> Record:
    """A Stu-base whose record a rerun has replaced, as its student's record saw it: key and
    test metrics only (no validation score, timing or seed of its own)."""
    return {"key": snapshot["key"], "test": snapshot["test"], "dataset": student["dataset"],
            "earlier_training": True}


def _is_earlier(runs: list[Record]) -> bool:
    return bool(runs[0].get("earlier_training"))


def _family_order(base: list[Record]) -> tuple[bool, float]:
    """Recorded Stu-bases first, the best on validation first; then earlier trainings."""
    return (True, 0.0) if _is_earlier(base) else (False, -validation_score(base))


@dataclass
class AblationRow:
    """A row of Fig. 3: a student (or its Stu-base) and the Stu-base it was distilled from."""

    dataset: str
    base_label: str  # the Stu-base's key, marked where a rerun has replaced its record
    name: str  # Stu-base, Stu-w/o-c, ..., Student
    runs: list[Record]
    base: list[Record]

    def mean(self, metric: str) -> float:
        return mean_test(self.runs, metric)

    def gain(self, metric: str) -> float | None:
        """Percent over the Stu-base; None for the Stu-base itself."""
        if self.name == "Stu-base":
            return None
        return 100 * (self.mean(metric) / mean_test(self.paired_base(), metric) - 1)

    def paired_base(self) -> list[Record]:
        """The Stu-base runs these students were distilled from (the same seeds), so that a
        gain compares like with like when the Stu-base has more seeds than a student."""
        snapshots = [r["pretrained"] for r in self.runs if r.get("pretrained")]
        paired = [b for b in self.base if any(_distilled_from(s, b) for s in snapshots)]
        return paired or self.base

    @property
    def variant(self) -> bool:
        """Whether this family is a variant of ours, not the paper's method."""
        return " ours" in self.base_label

    @property
    def earlier_training(self) -> bool:
        """Whether its Stu-base is a training whose record a rerun has replaced."""
        return _is_earlier(self.base)


def ablation_rows(records: Iterable[Record]) -> list[AblationRow]:
    """Fig. 3's rows, family by family (`ablation_families`), in the paper's order."""
    rows, records = [], list(records)
    families = [(f, "") for f in ablation_families(records)]
    families += [(f, " ours") for f in ablation_families(records, variants=True)]
    for (dataset, base, students), ours in families:
        family = {"Stu-base": base, **students}
        label = base[0]["key"] + ours + (" (earlier training)" if _is_earlier(base)
                                         else f" ({len(base)} seeds)" if len(base) > 1 else "")
        rows += [AblationRow(dataset, label, name, family[name], base)
                 for name in ABLATIONS if family.get(name)]
    return rows


def ablation_table(records: Iterable[Record], fmt: str = "github") -> str:
    """Fig. 3 as a table: the student at the paper's codebook shape, trained without
    distillation, with each part of it removed, and in full; the gain over the Stu-base each
    was distilled from, and for the full student the paper's (its text gives only that)."""
    rows, cells, earlier = [], {}, []
    for row in ablation_rows(records):
        if row.earlier_training and row.name == "Stu-base":
            earlier.append(f"- {row.dataset} Stu-base {row.base_label}: as the students "
                           f"distilled from it recorded it; record {row.base[0]['key']} now "
                           "holds a later training of the same settings")
        else:
            cells[((row.base_label, row.name), row.dataset)] = row.runs
        gains = []
        for metric in ("HR@10", "NDCG@10"):
            paper = (FIG3_GAIN_PERCENT[row.dataset][metric]
                     if row.name == "Student" and not row.variant else None)
            ours = row.gain(metric)
            gains.append(_beside(ours, paper) if ours is not None or paper else "-")
        seeds = ", ".join(str(r["seed"]) for r in row.runs if "seed" in r) or "-"
        rows.append([row.dataset, row.base_label, row.name, seeds,
                     *(row.mean(m) for m in ABLATION_METRICS), *gains])
    return ("Ablation (the paper's Fig. 3): test metrics in percent, the mean over the seeds "
            "listed; each student's gain over the Stu-base seeds it was distilled from, in "
            "percent, ours (the paper's); a Stu-base marked ours heads a variant of ours of the "
            "method (how it departs: the footnotes)\n\n"
            + tabulate(rows, headers=["data", "Stu-base", "student", "seeds", *ABLATION_METRICS,
                                      "HR@10 gain %", "NDCG@10 gain %"],
                       floatfmt=".2f", tablefmt=fmt)
            + "\n\n" + "\n".join([_sources(cells, lambda row: f"{row[1]} (from {row[0]})"),
                                   *earlier]))
