"""Run records at the paper's settings, as the tables of the paper read them (a few fields)."""

from __future__ import annotations

import itertools

from ecbench.bench.report.tables import RUN_METRICS

KD = {"contrastive": True, "soft": True, "bidirectional": True, "beta": 0.01, "gamma": 0.3,
      "eta": 0.8, "eta_schedule": "none", "temperature": 0.2, "epochs": None,
      "teacher_table": "live", "reduction": "sum"}
# the mixup weight the paper pretrains its students with (Eq. 24-25), by dataset
PRETRAIN_ETA = {"tmall": 0.8, "retailrocket": 0.7}
_keys = itertools.count()


def record(test: float, validation: float, *, data: str = "tmall", seed: int = 0,
           backbone: str = "sasrec", compressor: str = "full", paper_ratio: float = 1.0,
           **config) -> dict:
    """A run record whose every test metric is `test` and whose validation score is
    `validation`; `config` overrides the paper's settings."""
    base = {"data": data, "backbone": backbone, "compressor": compressor, "seed": seed,
            "compressor_options": {}, "backbone_options": {}, "ratio": None, "distill": None,
            "refit": None, "dim": {"tmall": 128, "retailrocket": 256}[data], "max_len": 50,
            "batch_size": 100, "lr": 1e-3, "l2": 1e-5, "select_on": "validation",
            "select_metric": "NDCG@10"}
    if backbone == "sasrec":
        base["backbone_options"] = ({"layers": 1, "heads": 1, "dropout": 0.5} if data == "tmall"
                                    else {"layers": 1, "heads": 2, "dropout": 0.2})
    base.update(config)
    return {"key": f"k{next(_keys)}", "config": base, "seed": seed,
            "dataset": {"name": data, "checksum": data},
            "validation_at_selected": {"NDCG@10": validation},
            "test": {m: test for m in RUN_METRICS},
            "size": {"item_storage": {"byte_ratio": 91.3, "paper_ratio": paper_ratio}},
            "timing": {"train_seconds_per_epoch_median": 100.0},
            "selection": {"on": base["select_on"], "epoch": 1, "epochs_run": 2},
            "provenance": {"git": {"commit": "0123456789"}}}


def student(test: float, validation: float, **config) -> dict:
    """A ccode student trained as the paper does (M=4, K=32, learned codes, the mixup in
    pretraining) unless `compressor_options` says otherwise."""
    config.setdefault("compressor_options",
                      {"M": 4, "K": 32, "eta": PRETRAIN_ETA[config.get("data", "tmall")]})
    config.setdefault("paper_ratio", 29.1)
    return record(test, validation, compressor="ccode", **config)


def distilled(base: dict, test: float, validation: float, **distill) -> dict:
    """A student distilled from the pretrained student `base` (its Stu-base)."""
    run = student(test, validation, compressor_options=base["config"]["compressor_options"],
                  distill={**KD, **distill}, seed=base["seed"])
    run["pretrained"] = {"key": base["key"], "test": dict(base["test"])}
    return run
