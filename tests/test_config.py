"""Run configs: paper presets, and record keys that stay stable across versions."""

from __future__ import annotations

import pytest

from ecbench.bench.cli.options import BENCH_DEFAULTS, make_run_config
from ecbench.bench.errors import ConfigError


def paper_config(data: str, extra: list[str] | None = None):
    opts = {**BENCH_DEFAULTS, "data": data, "compressor": "full", "backbone": "sasrec",
            "dim": None, "epochs": None, "patience": None}
    return make_run_config(opts, extra or [])


def test_paper_presets_per_dataset():
    tmall, rr = paper_config("tmall"), paper_config("retailrocket")
    assert tmall.dim == 128 and tmall.backbone_options == {"layers": 1, "heads": 1, "dropout": 0.5}
    assert rr.dim == 256 and rr.backbone_options == {"layers": 1, "heads": 2, "dropout": 0.2}
    assert (tmall.batch_size, tmall.lr, tmall.l2) == (100, 1e-3, 1e-5)


def test_explicit_options_override_the_preset():
    config = paper_config("tmall", ["--dropout", "0.3", "--layers", "2"])
    assert config.backbone_options == {"layers": 2, "heads": 1, "dropout": 0.3}


def test_record_keys_of_the_paper_teachers_are_stable(tmall):
    # Records and checkpoints are found by key; a field added later must not change old keys.
    assert paper_config("tmall").key(tmall.checksum) == "1f4591f4c4dc5af7"


def test_compressor_options_at_their_default_are_dropped_from_the_config():
    opts = {**BENCH_DEFAULTS, "data": "synthetic", "compressor": "ccode", "backbone": "sasrec",
            "dim": None, "epochs": None, "patience": None}
    explicit = make_run_config(opts, ["--M", "4", "--K", "32", "--eta", "0.8"])
    implicit = make_run_config(opts, ["--eta", "0.8"])
    assert explicit.compressor_options == implicit.compressor_options == {"eta": 0.8}
    assert explicit.key("x") == implicit.key("x")


def test_unknown_part_option_is_refused():
    with pytest.raises(ConfigError, match="unknown option --nosuch"):
        paper_config("tmall", ["--nosuch", "1"])


def test_tt_init_reaches_the_compressor_not_the_backbone():
    opts = {**BENCH_DEFAULTS, "data": "tmall", "compressor": "tt", "backbone": "sasrec",
            "dim": None, "epochs": None, "patience": None}
    config = make_run_config(opts, ["--init", "teacher", "--weight-init", "uniform-all"])
    assert config.compressor_options == {"init": "teacher"}
    assert config.backbone_options["weight_init"] == "uniform-all"


def test_built_in_parts_share_no_option_name():
    import dataclasses

    from ecbench import backbones
    from ecbench import compressors
    for c in compressors.registry.names():
        for b in backbones.registry.names():
            names = [{f.name for f in dataclasses.fields(r.get(n).config)}
                     for r, n in ((compressors.registry, c), (backbones.registry, b))]
            assert not names[0] & names[1], (c, b, names[0] & names[1])


def test_an_option_two_parts_claim_is_an_error():
    from dataclasses import dataclass

    from ecbench.bench.training.config import parse_part_options

    @dataclass
    class A:
        init: str = "x"

    @dataclass
    class B:
        init: str = "y"

    with pytest.raises(ConfigError, match="--init is claimed by both a and b"):
        parse_part_options(["--init", "z"], {"a": A, "b": B})
