"""The command line's manners: option clashes refused at registration, "did you mean" on
typos, `ecbench list` within 100 columns, the thread default, and the plan a run announces."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from torch import nn

from ecbench.bench.cpu import AUTO_THREADS_CAP, resolve_threads
from ecbench.bench.errors import ConfigError
from ecbench.compressors import OptionClashError, Registry
from helpers import run_cli


@dataclass
class SeededOptions:
    seed: int = 0


@dataclass
class DropoutOptions:
    dropout: float = 0.1


def build(config, **context):
    return nn.Identity()


def test_a_part_option_named_like_a_general_one_is_refused_when_it_registers():
    registry = Registry("compressor", "ecbench.test-none")
    registry.reserve({"--seed": "the general option --seed of `ecbench run`"})
    with pytest.raises(OptionClashError, match="--seed.*general option"):
        registry.register("seeded", config=SeededOptions)(build)
    assert "seeded" not in registry.names()


def test_reserving_a_flag_refuses_a_part_already_registered():
    registry = Registry("compressor", "ecbench.test-none")
    registry.register("seeded", config=SeededOptions)(build)
    with pytest.raises(OptionClashError, match="'seeded'"):
        registry.reserve({"--seed": "the general option --seed"})


def test_a_compressor_and_a_backbone_cannot_share_an_option_name():
    compressors = Registry("compressor", "ecbench.test-none")
    backbones = Registry("backbone", "ecbench.test-none")
    backbones.register("net", config=DropoutOptions)(build)
    backbones.share_command_line_with(compressors)
    with pytest.raises(OptionClashError, match="backbone 'net'"):
        compressors.register("dropper", config=DropoutOptions)(build)
    backbones.register("other-net", config=DropoutOptions)(build)  # alternatives may share


def test_the_built_in_parts_clash_with_nothing(tmp_path):
    proc = run_cli(["list"], tmp_path)
    assert proc.returncode == 0, proc.stderr


def test_list_fits_a_100_column_terminal(tmp_path):
    proc = run_cli(["list"], tmp_path)
    assert "ccode" in proc.stdout and "--M int=4" in proc.stdout
    assert max(map(len, proc.stdout.splitlines())) <= 100


@pytest.mark.parametrize("typo,suggestion", [("--epoch", "--epochs"), ("--KK", "--K"),
                                             ("--hiden-size", "--hidden-size")])
def test_an_option_typo_gets_a_did_you_mean(tmp_path, typo, suggestion):
    args = ["run", "--compressor", "ccode", typo, "3"]
    if typo == "--hiden-size":
        args[1:3] = ["--backbone", "gru4rec"]
    proc = run_cli(args, tmp_path)
    assert proc.returncode != 0
    assert f"did you mean {suggestion}" in proc.stderr and "Traceback" not in proc.stderr


def test_threads_take_a_number_or_auto():
    assert resolve_threads("3") == 3
    assert 1 <= resolve_threads("auto") <= AUTO_THREADS_CAP
    for bad in ("0", "-1", "many"):
        with pytest.raises(ConfigError, match="--threads"):
            resolve_threads(bad)


def test_a_student_run_announces_its_chain_before_training(tmp_path):
    proc = run_cli(["run", "--compressor", "ccode", "--M", "2", "--K", "64", "--dim", "16",
                    "--epochs", "1", "--kd", "full", "--plan-only", "--results",
                    str(tmp_path / "r"), "--workdir", str(tmp_path / "w")], tmp_path)
    assert proc.returncode == 0, proc.stderr
    plan = next(line for line in proc.stderr.splitlines() if line.startswith("plan: "))
    stages = [part.split(" (up to")[0] for part in plan[len("plan: "):].split("; then ")]
    assert stages == ["teacher", "pretrained student (Stu-base)", "distillation"]
    assert "of training in all" in plan
    assert not (tmp_path / "r").exists()  # a plan only: nothing trained, nothing written
