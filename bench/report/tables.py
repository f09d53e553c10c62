"""Tables rendered from run records: pure functions of the records, nothing else."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np
from tabulate import tabulate

from ecbench.bench.training.config import (RunConfig, backbone_preset, compressor_preset,
                                           distill_weights, repeat_head)
from ecbench.bench.report.paper import FIG6_CODES, FIG6_USAGE_RANGE, TABLE5_SECONDS

RUN_METRICS = ("HR@5", "NDCG@5", "HR@10", "NDCG@10", "HR@20", "NDCG@20", "MRR@20")


# the general training options (the paper's for every model): a variant names departures
TRAINING_DEFAULTS = {name: f.default for name, f in RunConfig.__dataclass_fields__.items()
                      if name in ("lr", "l2", "batch_size", "max_len")}

_ABLATIONS = (("contrastive", "w/o-c"), ("bidirectional", "w/o-b"), ("soft", "w/o-s"))


def backbone_departures(config: dict[str, Any]) -> dict[str, Any]:
    """The backbone options of a run config that are not the dataset's preset: a preset value
    changed, or an option the preset does not set (the command line records only the preset
    and what was given, so such an option was chosen on purpose)."""
    preset = backbone_preset(config["data"], config["backbone"])
    return {k: v for k, v in config.get("backbone_options", {}).items()
            if k not in preset or preset[k] != v}


def variant(config: dict[str, Any]) -> str:
    """What sets a run apart beyond data, backbone and compressor, in a few words: the
    compressor's non-default options, a byte budget, distillation and its ablations, the legacy
    mixed evaluation or selection on test, backbone options off the dataset's preset, dropout
    cut short."""
    parts = [f"{k}={v}" for k, v in sorted(config["compressor_options"].items())
             if k != "eval_table"]
    parts += [f"{name}={config[name]:g}" for name, default in TRAINING_DEFAULTS.items()
              if name in config and config[name] != default]
    if config.get("ratio"):
        parts.append(f"ratio {config['ratio']:g}")
    distill = config.get("distill")
    if distill:
        flags = [name for key, name in _ABLATIONS if not distill[key]]
        if distill["eta"] == 0:
            flags.append("w/o-m")
        parts.append("KD" + (f" {' '.join(flags)}" if flags else "")
                     + (f" eta {distill['eta_schedule']}" if distill["eta_schedule"] != "none"
                        else ""))
        parts += distill_departures(config["data"], distill) + loop_departures(distill)
    if config["compressor_options"].get("eval_table") == "mixed":
        parts.append("eval mixed (legacy)")
    if config.get("refit"):
        parts.append("refit")
    head = repeat_head(config)
    if head:
        parts.append(f"repeat {head}")
    if config.get("select_on") == "test":
        parts.append("paper protocol (legacy)")
    parts += [f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
              for k, v in sorted(backbone_departures(config).items())]
    if config.get("dropout_epochs") is not None:
        parts.append(f"dropout in {config['dropout_epochs']} epoch(s)")
    return ", ".join(parts) or "-"


def loop_departures(distill: dict[str, Any]) -> list[str]:
    """How a distillation's loop departs from Algorithm 1: a copied teacher table, averaged
    KD losses (a record that predates these choices had both), the released code's loop."""
    return [label for label, departs in (
        ("teacher table copied", distill.get("teacher_table", "copy") != "live"),
        ("KD mean", distill.get("reduction", "mean") != "sum"),
        ("released-code loop (legacy)", bool(distill.get("released_code")))) if departs]


# ccode's options as the paper trains its students (Section 4, 6.1.3): codes learned end to end
# throughout (Eq. 13-15) with the reconstruction loss (Eq. 12), every item's code sampled each
# step from the encoder's distribution; the mixup weight comes from the dataset's preset.
PAPER_CCODE = {"freeze_codes_after": None, "initial_codes": "encoder", "random_codebooks": 0,
               "code_sample": 1.0, "gumbel_scale": 1.0, "tau": 0.3, "mse_weight": 1.0,
               "standardize": True, "eval_table": "compressed"}


def departures_from_paper(config: dict[str, Any]) -> list[str]:
    """How a ccode student's training departs from the paper's method, in a few words each
    (empty: it is the paper's Stu-base, Student or one of its ablations). A distillation
    record from before the choice was recorded read a copy of the teacher's table and
    averaged its losses."""
    if config["compressor"] != "ccode":
        return []
    from ecbench.compressors.ccode import CCodeConfig

    options = {**dataclasses.asdict(CCodeConfig()), **config["compressor_options"]}
    named = {"freeze_codes_after": lambda n: ("codes frozen at init" if n == 0
                                              else f"codes frozen after {n} epochs"),
             "initial_codes": lambda v: f"{v} codes",
             "random_codebooks": lambda n: f"{n} random codebooks"}
    out = [named[k](options[k]) if k in named else f"{k.replace('_', ' ')} {options[k]}"
           for k, v in PAPER_CCODE.items() if options[k] != v]
    if options["eta"] != compressor_preset(config["data"], "ccode")["eta"]:
        out.append("no mixup in pretraining" if options["eta"] == 0
                   else f"pretraining eta {options['eta']:g}")
    distill = config.get("distill")
    if distill:
        out += loop_departures(distill)
        if distill["eta_schedule"] != "none":
            out.append(f"eta {distill['eta_schedule']}")
        out += distill_departures(config["data"], distill)
    return out


def distill_departures(data: str, distill: dict[str, Any]) -> list[str]:
    """The distillation weights off the dataset's defaults, as `beta=0.5` or `kd_eta=0.4`
    (the compressor's own mixup is `eta`; an eta of 0 is already named: w/o-m)."""
    defaults = distill_weights(data)
    return [f"{'kd_eta' if name == 'eta' else name}={distill[name]:g}"
            for name in sorted(defaults)
            if distill[name] != defaults[name] and not (name == "eta" and distill[name] == 0)]


def _order(r: dict[str, Any]) -> tuple:
    return (r["dataset"]["name"], r["config"]["backbone"], r["config"]["compressor"],
            variant(r["config"]), r["seed"])


def run_rows(records: Iterable[dict[str, Any]]) -> list[list[Any]]:
    """One row per record: what ran, how it was selected, its test metrics and its cost."""
    rows = []
    for r in sorted(records, key=_order):
        sel = r["selection"]
        storage = r["size"]["item_storage"]
        row = [
            r["dataset"]["name"], r["config"]["backbone"], r["config"]["compressor"],
            variant(r["config"]), r["seed"],
            f"{sel['on']} ({sel['epoch']}/{sel['epochs_run']})",
            *(r["test"][m] for m in RUN_METRICS),
            storage["byte_ratio"], r["timing"]["train_seconds_per_epoch_median"],
            (r["provenance"]["git"]["commit"] or "?")[:8],
        ]
        rows.append(row)
        alone = r.get("test_compressed_table")
        if alone:  # a legacy-scored run: the same model, deployed (its bytes are not recorded)
            rows.append([*row[:3], f"{row[3]}: compressed table alone", *row[4:6],
                         *(alone[m] for m in RUN_METRICS), None, *row[-2:]])
    return rows


def runs_table(records: Iterable[dict[str, Any]], fmt: str = "github") -> str:
    headers = ["data", "backbone", "compressor", "variant", "seed", "selected on (epoch)",
               *RUN_METRICS, "byte ratio", "s/epoch", "commit"]
    return tabulate(run_rows(records), headers=headers, floatfmt=".2f", tablefmt=fmt,
                    missingval="-")


def index_model(record: dict[str, Any]) -> str:
    """A run's model in a few words: the backbone for a dense table (SASRec's is the teacher),
    else the compressor, a ccode student named by its training (Stu-base, Student, ...)."""
    config = record["config"]
    if config["compressor"] == "full":
        return "teacher" if config["backbone"] == "sasrec" else config["backbone"]
    name = config["compressor"]
    if name == "ccode":
        from ecbench.bench.report.paper_tables import ablation_of, ccode_shape

        m, k = ccode_shape(config)
        name = f"{ablation_of(config) or 'ccode student'} M={m} K={k}"
    return name if config["backbone"] == "sasrec" else f"{config['backbone']} + {name}"


def _index_scores(record: dict[str, Any]) -> str:
    """Test HR@10 / NDCG@10; where the record holds the same model scored another way, that
    too: the compressed table alone (a legacy run) or the teacher's table mixed in."""
    def pair(metrics: dict[str, float]) -> str:
        return f"{metrics['HR@10']:.2f} / {metrics['NDCG@10']:.2f}"

    text = pair(record["test"])
    if record.get("test_compressed_table"):
        text += f"; alone {pair(record['test_compressed_table'])}"
    if record.get("test_mixed_table"):
        text += f"; mixed (legacy) {pair(record['test_mixed_table'])}"
    return text


def record_index(records: Iterable[dict[str, Any]]) -> str:
    """Every run record by dataset: its key, model, variant, seed, test HR@10 / NDCG@10 and
    the epoch selected (v: on validation, t: on test, legacy)."""
    by_data: dict[str, list[dict[str, Any]]] = {}
    for r in sorted(records, key=_order):
        by_data.setdefault(r["dataset"]["name"], []).append(r)
    parts = []
    for data, runs in sorted(by_data.items()):
        rows = [[f"`{r['key']}`", index_model(r), variant(r["config"]), r["seed"], _index_scores(r),
                 f"{r['selection']['on'][0]} {r['selection']['epoch']}/"
                 f"{r['selection']['epochs_run']}"] for r in runs]
        parts.append(f"#### {data}\n\n" + tabulate(
            rows, headers=["key", "model", "variant", "seed", "HR@10 / NDCG@10", "epoch"],
            tablefmt="github", disable_numparse=True))
    return "\n\n".join(parts)


def settings_key(config: dict[str, Any]) -> str:
    """A run config but its seed, as canonical JSON: what runs that differ only in their seed
    share. An unset field (None) counts as absent, as in `RunConfig.key`: records written
    before a config field existed match later ones that leave it unset."""
    return json.dumps({k: v for k, v in config.items() if k != "seed" and v is not None},
                      sort_keys=True)


def seed_groups(records: Iterable[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Records grouped by everything but the seed (same `settings_key`, same data), in table
    order."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in sorted(records, key=_order):
        groups.setdefault((r["dataset"]["checksum"], settings_key(r["config"])), []).append(r)
    return list(groups.values())


def seed_summary_rows(records: Iterable[dict[str, Any]]) -> list[list[Any]]:
    """Runs that differ only in their seed, as one row: test metrics as mean ± std (the sample
    standard deviation; none for a single seed) and the seeds counted."""
    rows = []
    for runs in seed_groups(records):
        first = runs[0]
        cells = []
        for metric in RUN_METRICS:
            values = np.array([r["test"][metric] for r in runs])
            cells.append(f"{values.mean():.2f}" + (f" ± {values.std(ddof=1):.2f}"
                                                    if len(values) > 1 else ""))
        rows.append([first["dataset"]["name"], first["config"]["backbone"],
                     first["config"]["compressor"], variant(first["config"]),
                     first["selection"]["on"], len(runs), *cells])
    return rows


def summary_table(records: Iterable[dict[str, Any]], fmt: str = "github") -> str:
    headers = ["data", "backbone", "compressor", "variant", "selected on", "seeds", *RUN_METRICS]
    return tabulate(seed_summary_rows(records), headers=headers, tablefmt=fmt)


STUDENT = "New Student"
TEACHER = "SASRec (teacher)"


def paper_model(backbone: str, compressor: str) -> str:
    """The paper's name for a (backbone, compressor) pair: baselines are dense, OD-Rec is
    SASRec+sttd, the new student SASRec+ccode; anything else keeps its own name."""
    key = "".join(ch for ch in backbone.lower() if ch.isalnum())
    if compressor == "full":
        names = {"gru4rec": "GRU4Rec", "narm": "NARM", "stamp": "STAMP", "srgnn": "SR-GNN",
                 "sasrec": TEACHER}
        return names.get(key, f"{backbone} (full)")
    if key == "sasrec" and compressor in ("sttd", "ccode"):
        return "OD-Rec" if compressor == "sttd" else STUDENT
    return f"{backbone}+{compressor}"


@dataclass(frozen=True)
class LatencyCell:
    """One model's time in Table 5, with what a reader must know about it."""

    ms: float
    record_date: str
    trained: bool
    may_hold_dense_table: bool
    record: str = "?"  # the latency record's file, and the machine that timed it
    machine: str = "?"

    def flags(self) -> str:
        marks = [m for m, on in (("untrained", not self.trained),
                                 ("may hold a dense table", self.may_hold_dense_table)) if on]
        return f" ({', '.join(marks)})" if marks else ""


def _model_cells(record: dict[str, Any], runtime: str, batch: int
                 ) -> dict[tuple[str, str], LatencyCell]:
    cells = {}
    for model in record["models"]:
        timing = model["runtimes"].get(runtime, {})
        ms = timing.get("batches", {}).get(str(batch))
        if not ms:
            continue
        config = model["config"]
        name = paper_model(config["backbone"], config["compressor"])
        head = repeat_head(config)
        cells[f"{name} + repeat {head}" if head else name, record["dataset"]["name"]] = LatencyCell(
            ms["end_to_end"]["median_ms"], record["date"],
            bool(model.get("source", {}).get("trained", True)),
            bool((timing.get("artefact") or {}).get("may_hold_dense_table")),
            record.get("file", "?"), record["provenance"]["machine"].get("cpu", "?"))
    return cells


def times_paper_models(record: dict[str, Any]) -> bool:
    """Whether a latency record is one of Table 5's: it timed the paper's models alone (the
    teacher and repeat heads beside them), at least one the paper timed. A record of other
    compressors is not, though it holds a ccode or sttd point of its own (a frontier's)."""
    names = {paper_model(m["config"]["backbone"], m["config"]["compressor"])
             for m in record["models"] if not repeat_head(m["config"])}
    return bool(names & set(TABLE5_SECONDS)) and names <= set(TABLE5_SECONDS) | {TEACHER}


def latency_cells(records: Iterable[dict[str, Any]], runtime: str, batch: int,
                  cache: str = "warm") -> dict[tuple[str, str], LatencyCell]:
    """(model, dataset) -> its cell, from the records timed with `cache` warm or cold
    (`ecbench.bench.deploy.latency`), of Table 5's records alone (`times_paper_models`).
    Ratios hold only within one process, so every cell of a dataset (and of its repeat-head
    models, timed apart) comes from one record: the one that timed the most of the paper's
    models, then the most trained ones (Table 5 is of trained models; an untrained model of
    their shape stands in only until they are), then the most models, the latest among
    equals."""
    chosen: dict[tuple[str, bool], tuple[tuple[int, int, int, str], dict]] = {}
    for record in records:
        if record["protocol"].get("cache", "warm") != cache or not times_paper_models(record):
            continue
        cells = _model_cells(record, runtime, batch)
        for heads in (False, True):
            mine = {k: c for k, c in cells.items() if (" + repeat " in k[0]) == heads}
            if not mine:
                continue
            group = (record["dataset"]["name"], heads)
            rank = (sum(model in TABLE5_SECONDS for model, _ in mine),
                    sum(cell.trained for cell in mine.values()), len(mine), record["date"])
            if group not in chosen or rank >= chosen[group][0]:
                chosen[group] = (rank, mine)
    return {key: cell for _, cells in chosen.values() for key, cell in cells.items()}


def table5(records: Iterable[dict[str, Any]], runtime: str = "eager", batch: int = 100,
           fmt: str = "github", cache: str = "warm") -> str:
    """Table 5's layout: models x datasets, ms per 100 sessions, ours beside the paper's, and
    each model's time over the new student's (the paper's "8x faster than OD-Rec")."""
    cells = latency_cells(records, runtime, batch, cache)
    scale = 100 / batch  # ms per 100 sessions
    datasets = sorted({d for _, d in cells} | {"tmall", "retailrocket"})
    order = list(TABLE5_SECONDS) + sorted({m for m, _ in cells} - set(TABLE5_SECONDS))
    headers = ["model"]
    for d in datasets:
        headers += [f"{d} ours", f"{d} paper", f"{d} ours / student", f"{d} paper / student"]
    rows = []
    for model in order:
        row: list[Any] = [model]
        for d in datasets:
            cell, student = cells.get((model, d)), cells.get((STUDENT, d))
            paper = TABLE5_SECONDS.get(model, {}).get(d)
            paper_student = TABLE5_SECONDS[STUDENT].get(d)
            row += [None if cell is None else f"{cell.ms * scale:.2f}{cell.flags()}",
                    None if paper is None else 1e3 * paper,
                    None if cell is None or not student or " + repeat " in model
                    else cell.ms / student.ms,
                    None if paper is None or not paper_student else paper / paper_student]
        if any(v is not None for v in row[1:]):
            rows.append(row)
    sources = sorted({(c.record, c.record_date, c.machine) for c in cells.values()})
    title = (f"ms per 100 sessions ({runtime}, batch {batch}, one thread, {cache} caches; "
             "paper: Pixel 2 emulator, PyTorch Mobile); each dataset's models timed in one "
             "process (repeat heads timed apart, so their ratio to the student is not shown); "
             "untrained: a model of the trained one's shape, timing only. Records: "
             + ("; ".join(f"results/bench/{name} ({date}, {cpu})" for name, date, cpu in sources)
                or "-"))
    return title + "\n\n" + tabulate(rows, headers=headers, floatfmt=".2f", tablefmt=fmt,
                                     missingval="-")


CASE_METRICS = ("HR@10", "NDCG@10", "MRR@10")


def cases_table(analyses: Iterable[dict[str, Any]]) -> str:
    """Test metrics by kind of case (`ecbench.bench.report.analysis`), a row per run and case
    group: what a compressed table loses, and where."""
    rows = []
    for a in sorted(analyses, key=lambda a: (a["dataset"], a["config"]["backbone"],
                                             a["config"]["compressor"], variant(a["config"]))):
        for group, m in a["test_by_case"].items():
            missed = a.get("missed_top", {}).get(group, {})
            rows.append([a["dataset"], a["config"]["backbone"], a["config"]["compressor"],
                         variant(a["config"]), group, m["share"],
                         *(m.get(k, float("nan")) for k in CASE_METRICS),
                         missed.get("in_session"), missed.get("hot")])
    return tabulate(rows, headers=["data", "backbone", "compressor", "variant", "cases",
                                   "share %", *CASE_METRICS, "missed: top-10 in session %",
                                   "missed: top-10 hot %"],
                    floatfmt=".2f", tablefmt="github", missingval="-")


def codes_table(analyses: Iterable[dict[str, Any]]) -> str:
    """A row per analysed ccode run (`ecbench.bench.report.code_analysis`): how its codes are
    spread, and how much of what outranks a missed label is one codeword from it."""
    rows = []
    for a in sorted(analyses, key=lambda a: (a["dataset"], variant(a["config"]))):
        codes, crowding = a["codes"], a["crowding"]
        rows.append([a["dataset"], f"M={codes['M']} K={codes['K']}", variant(a["config"]),
                     100 * codes["occupancy"], f"{codes['usage_min']}-{codes['usage_max']}",
                     codes["one_codeword_neighbours_mean"], codes["items_with_a_neighbour"],
                     *(100 * crowding[g]["neighbour_share_of_top"] for g in ("repeat", "new")),
                     100 * a["neighbour_share_by_chance"]])
    return tabulate(rows, headers=["data", "codes", "variant", "occupancy %", "codeword use",
                                   "neighbours / item", "items with one %",
                                   "missed repeat: top-10 neighbours %",
                                   "missed new: top-10 neighbours %", "by chance %"],
                    floatfmt=".3g", tablefmt="github")


def fig6_table(analysis: dict[str, Any]) -> str:
    """The paper's Fig. 6 as numbers: how many items use each codeword, a row per codebook."""
    usage = analysis["codes"]["codeword_usage"]
    headers = ["codebook"] + [str(k) for k in range(len(usage[0]))]
    rows = [[i + 1, *counts] for i, counts in enumerate(usage)]
    shape = (analysis["codes"]["M"], analysis["codes"]["K"])
    paper = FIG6_USAGE_RANGE.get(analysis["dataset"]) if shape == FIG6_CODES else None
    title = (f"codeword usage, {analysis['dataset']} {variant(analysis['config'])} "
             f"(M={shape[0]}, K={shape[1]}; record {analysis['key']}"
             + (f"; the paper's range: {paper[0]}-{paper[1]} items a codeword)" if paper else ")"))
    return title + "\n\n" + tabulate(rows, headers=headers, tablefmt="github")
