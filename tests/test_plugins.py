"""A third-party compressor, installed as a package, appears and runs with no edit to ecbench."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import ecbench_command, records_under

PLUGIN = Path(__file__).parent / "plugin_example"


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory) -> dict[str, str]:
    """pip-install the example plugin into a throwaway folder put on the path."""
    target = tmp_path_factory.mktemp("site")
    source = tmp_path_factory.mktemp("src") / "plugin"
    shutil.copytree(PLUGIN, source)  # building in place would leave build/ in the repository
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", "--target", str(target), str(source)],
        capture_output=True, text=True, cwd=source, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert list(target.glob("ecbench_lowrank-*.dist-info"))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(target), env.get("PYTHONPATH", "")])
    return env


def test_contributing_example_is_the_plugin_that_is_tested():
    contributing = (Path(__file__).parents[1] / "CONTRIBUTING.md").read_text()
    example = re.search(r"```python\n(.*?)```", contributing, re.S).group(1)
    assert example in (PLUGIN / "ecbench_lowrank" / "__init__.py").read_text()


def test_installed_plugin_is_listed_with_its_options(plugin_env, tmp_path):
    proc = subprocess.run([*ecbench_command(), "list"], capture_output=True, text=True,
                          env=plugin_env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = proc.stdout.splitlines()
    at = next(i for i, row in enumerate(rows) if row.strip().startswith("lowrank"))
    assert "[plugin: ecbench_lowrank]" in rows[at]
    assert "--rank int=8" in rows[at + 1]


def test_installed_plugin_trains_and_is_recorded(plugin_env, tmp_path):
    proc = subprocess.run(
        [*ecbench_command(), "run", "--compressor", "lowrank", "--rank", "4", "--epochs", "1",
         "--dim", "16", "--threads", "1", "--no-progress", "--results", str(tmp_path / "r"),
         "--workdir", str(tmp_path / "w")],
        capture_output=True, text=True, env=plugin_env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    import json
    record = json.loads(records_under(tmp_path / "r")[0].read_text())
    assert record["config"]["compressor"] == "lowrank"
    assert record["config"]["compressor_options"] == {"rank": 4}
    assert record["size"]["item_storage"]["byte_ratio"] > 1


def test_without_the_plugin_the_name_is_unknown(tmp_path):
    proc = subprocess.run([*ecbench_command(), "run", "--compressor", "lowrank"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode != 0
    assert "unknown compressor 'lowrank'" in proc.stderr
