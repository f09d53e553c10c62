"""The typed configuration of a run, the paper's presets, and part options from the command line."""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal

from ecbench.bench.errors import ConfigError, RecordError

SelectOn = Literal["validation", "test"]


@dataclass
class RunConfig:
    """Everything that determines a run's result (and so its record key)."""

    data: str = "synthetic"
    compressor: str = "full"
    backbone: str = "sasrec"
    compressor_options: dict[str, Any] = field(default_factory=dict)
    backbone_options: dict[str, Any] = field(default_factory=dict)
    dim: int = 64
    max_len: int = 50
    batch_size: int = 100
    lr: float = 1e-3
    l2: float = 1e-5
    epochs: int = 30
    patience: int = 3
    select_metric: str = "NDCG@10"
    select_on: SelectOn = "validation"
    val_fraction: float = 0.1
    val_split: Literal["random", "last"] = "random"
    hot_fraction: float = 0.2
    precision: Literal["fp32", "bf16"] = "fp32"
    seed: int = 0
    # Students only (compressors that learn from a trained table). None = not set: such fields
    # stay out of the key, so adding them did not change the keys of earlier records.
    teacher: str | None = None  # a record (JSON), a model file or a key; None = same settings
    student_init: Literal["teacher", "random"] | None = None  # the encoder's start; None = teacher
    ratio: float | None = None  # a byte-ratio budget the compressor meets with its own options
    refit: bool | None = None  # retrain on all training sessions for the validation-chosen epochs
    # Dropout in the first N epochs only, then off (None = every epoch): how the paper's released
    # code trains, since it switches to eval mode for its first test and never back.
    dropout_epochs: int | None = None
    # Repeat-aware scoring of the session's own items (backbones.repeat), beyond the paper: a
    # learned bonus, or RepeatNet's repeat/explore mixture. None (off) keeps earlier keys.
    repeat_bonus: bool | None = None
    repeat_mixture: bool | None = None
    # Distillation (ecbench.bench.training.distill): the DistillConfig fields, or None for
    # plain training.
    distill: dict[str, Any] | None = None
    pretrained: str | None = None  # the student to distil from; None = the same run undistilled

    def __post_init__(self) -> None:
        checks = [
            (self.dim >= 1, f"--dim must be positive, got {self.dim}"),
            (self.ratio is None or self.ratio > 1,
             f"--ratio must exceed 1 (the dense table's bytes over the compressed one's), "
             f"got {self.ratio}"),
            (self.max_len >= 1, f"--max-len must be positive, got {self.max_len}"),
            (self.batch_size >= 1, f"--batch-size must be positive, got {self.batch_size}"),
            (self.lr > 0, f"--lr must be positive, got {self.lr}"),
            (self.l2 >= 0, f"--l2 must be non-negative, got {self.l2}"),
            (self.epochs >= 1, f"--epochs must be at least 1, got {self.epochs}"),
            (self.patience >= 1, f"--patience must be at least 1, got {self.patience}"),
            (self.dropout_epochs is None or self.dropout_epochs >= 0,
             f"--dropout-epochs must be non-negative, got {self.dropout_epochs}"),
            (self.select_on in ("validation", "test"),
             f"--select-on must be validation or test, got {self.select_on!r}"),
            (self.val_split in ("random", "last"),
             f"--val-split must be random or last, got {self.val_split!r}"),
            (0.0 < self.val_fraction < 1.0, "--val-fraction must be in (0, 1)"),
            (0.0 < self.hot_fraction < 1.0, "--hot-fraction must be in (0, 1)"),
            (self.precision in ("fp32", "bf16"),
             f"--precision must be fp32 or bf16, got {self.precision!r}"),
            (not (self.refit and self.select_on == "test"),
             "--refit needs an epoch count chosen on validation, not --select-on test"),
            (self.student_init in (None, "teacher", "random"),
             f"--student-init must be teacher or random, got {self.student_init!r}"),
            (not (self.distill is not None and self.refit),
             "--refit is for plain training, not for distillation"),
            (not (self.repeat_bonus and self.repeat_mixture),
             "--repeat-bonus and --repeat-mixture are two ways to score repeats: choose one"),
            (not (self.pretrained and self.distill is None),
             "--pretrained names the student a distillation starts from: it needs --kd full"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        from ecbench.bench.evaluation.metrics import CUTOFFS
        valid = {f"{m}@{k}" for m in ("HR", "NDCG", "MRR") for k in CUTOFFS}
        if self.select_metric not in valid:
            raise ConfigError(f"--select-metric must be one of {', '.join(sorted(valid))}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def repeat_head(self) -> str | None:
        """The repeat head of `backbones.repeat` the model gets, if any."""
        return repeat_head(vars(self))

    @classmethod
    def from_record(cls, record: dict[str, Any], source: Path | str) -> "RunConfig":
        """The config a run record stores, checked: a key this version does not know (a
        record written by another version) or a value it refuses is one line of error."""
        config = record.get("config")
        if not isinstance(config, dict):
            raise RecordError(f"{source}: its config is missing or not an object")
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(config) - fields)
        if unknown:
            raise RecordError(f"{source}: unknown config key(s) {', '.join(unknown)} (a record "
                              "of another version of ecbench?)")
        try:
            return cls(**config)
        except (TypeError, ValueError, ConfigError) as exc:
            raise RecordError(f"{source}: its config is refused: {exc}") from None

    def key(self, data_checksum: str) -> str:
        """A short hash of the config and the exact data it ran on."""
        config = {k: v for k, v in self.to_dict().items() if v is not None}
        payload = json.dumps({"config": config, "data": data_checksum}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def repeat_head(config: dict[str, Any]) -> str | None:
    """The repeat head a run config (a RunConfig's fields, or a record's config) names, if any:
    "bonus" or "mixture" (`backbones.repeat`)."""
    if config.get("repeat_bonus"):
        return "bonus"
    return "mixture" if config.get("repeat_mixture") else None


# The paper's settings (Section 6.1.3) per dataset; the user's explicit options win. Backbone
# options are kept per backbone: the paper gives them for its SASRec backbone only; the
# baselines take its general settings (dim, batch, lr, L2) and their own papers' defaults.
# "distill" holds the distillation weights of Section 6.6.
PAPER_PRESETS: dict[str, dict[str, Any]] = {
    "tmall": {"dim": 128, "backbones": {"sasrec": {"layers": 1, "heads": 1, "dropout": 0.5}},
              "distill": {"beta": 0.01, "gamma": 0.3, "eta": 0.8}},
    "retailrocket": {"dim": 256,
                     "backbones": {"sasrec": {"layers": 1, "heads": 2, "dropout": 0.2}},
                     "distill": {"beta": 0.5, "gamma": 0.3, "eta": 0.7}},
    "synthetic": {"dim": 64, "epochs": 10, "patience": 2,
                  "backbones": {"sasrec": {"layers": 1, "heads": 1, "dropout": 0.2}}},
}


def preset_for(data: str) -> dict[str, Any]:
    name = data.rstrip("/").split("/")[-1].lower()
    return PAPER_PRESETS.get(name, {})


# The distillation weights of Eq. 27 where a dataset's preset gives none: the paper's for Tmall.
DISTILL_WEIGHTS: dict[str, float] = {"beta": 0.01, "gamma": 0.3, "eta": 0.8}


def distill_weights(data: str) -> dict[str, float]:
    """The distillation weights `--kd full` uses on `data` unless --beta, --gamma, --kd-eta say."""
    return {**DISTILL_WEIGHTS, **preset_for(data).get("distill", {})}


def compressor_preset(data: str, compressor: str) -> dict[str, Any]:
    """The preset options of `compressor` on `data`: ccode pretrains on the mixed table E' of
    Eq. 16 (Eq. 24-25, the paper's Stu-base) with the dataset's mixup weight; `--eta 0`
    pretrains on the compressed table alone (a variant)."""
    if compressor == "ccode":
        return {"eta": distill_weights(data)["eta"]}
    return {}


def backbone_preset(data: str, backbone: str) -> dict[str, Any]:
    """The preset options of `backbone` on `data` (empty where the paper gives none)."""
    return dict(preset_for(data).get("backbones", {}).get(backbone, {}))


def _field_type(config_cls: type, f: dataclasses.Field) -> Any:
    return typing.get_type_hints(config_cls)[f.name]


def coerce_option(config_cls: type, name: str, raw: Any) -> Any:
    """Convert a command-line string to the type of `config_cls.name`."""
    f = {f.name: f for f in dataclasses.fields(config_cls)}[name]
    hint = _field_type(config_cls, f)
    flag = "--" + name.replace("_", "-")
    if not isinstance(raw, str):
        return raw
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType) and type(None) in typing.get_args(hint):
        if raw.lower() == "none":  # an optional option: "none" is its unset value
            return None
        hint = next(arg for arg in typing.get_args(hint) if arg is not type(None))
        origin = typing.get_origin(hint)
    if origin is Literal:
        choices = typing.get_args(hint)
        if raw not in choices:
            raise ConfigError(f"{flag} must be one of {', '.join(map(str, choices))}, got {raw!r}")
        return raw
    if hint is bool:
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{flag} takes true or false, got {raw!r}")
    try:
        return hint(raw)
    except (TypeError, ValueError):
        kind = {int: "an integer", float: "a number", str: "a string"}.get(hint, str(hint))
        raise ConfigError(f"{flag} takes {kind}, got {raw!r}") from None


def parse_part_options(args: list[str], parts: dict[str, type],
                       general: Iterable[str] = ()) -> dict[str, dict[str, Any]]:
    """Split `--name value` pairs among the option dataclasses of the chosen parts.

    `parts` maps a part label (e.g. "compressor full") to its config class. An option no part
    knows is an error naming every part it was looked up in, and the closest known flags
    (theirs and the `general` ones) as a "did you mean".
    """
    out: dict[str, dict[str, Any]] = {label: {} for label in parts}
    fields = {label: {f.name for f in dataclasses.fields(cls)} for label, cls in parts.items()}
    i = 0
    while i < len(args):
        token = args[i]
        if not token.startswith("--"):
            raise ConfigError(f"unexpected argument {token!r}")
        name, _, value = token[2:].partition("=")
        if not value:
            if i + 1 >= len(args):
                raise ConfigError(f"option {token} needs a value")
            value = args[i + 1]
            i += 1
        i += 1
        attr = name.replace("-", "_")
        owners = [label for label in parts if attr in fields[label]]
        if not owners:
            known = [f"--{f.replace('_', '-')}" for label in parts for f in fields[label]]
            close = difflib.get_close_matches(f"--{name}", [*known, *general], n=3, cutoff=0.6)
            hint = f"; did you mean {' or '.join(close)}?" if close else ""
            raise ConfigError(f"unknown option --{name} for {' and '.join(parts)} "
                              f"(see `ecbench list`){hint}")
        if len(owners) > 1:
            raise ConfigError(f"option --{name} is claimed by both {' and '.join(owners)}; "
                              f"one of them must rename it")
        out[owners[0]][attr] = coerce_option(parts[owners[0]], attr, value)
    return out


def canonical_options(config_cls: type, options: dict[str, Any]) -> dict[str, Any]:
    """Options minus those at their default, so equal configs get equal record keys."""
    defaults = {f.name: f.default for f in dataclasses.fields(config_cls)}
    return {k: v for k, v in sorted(options.items()) if defaults.get(k, object()) != v}


def build_part_config(config_cls: type, options: dict[str, Any], label: str) -> Any:
    """Instantiate a part's config, turning its own validation errors into ConfigError."""
    try:
        return config_cls(**options)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{label}: {exc}") from None
