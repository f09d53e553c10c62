"""The layout's one-way doors, read from every module's imports (function-level ones too).

compressors know nothing of backbones or bench; backbones nothing of bench; inside bench each
part imports only the parts below it (CONTRIBUTING.md, "Layout"):

    cli -> sweep, report -> deploy -> training -> evaluation -> data -> base
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# The parts of ecbench, lowest first; each may import itself and any part before it.
LAYERS = ["compressors", "backbones", "bench.base", "bench.data", "bench.evaluation",
          "bench.training", "bench.deploy", "bench.report", "bench.sweep", "bench.cli"]
# Parts on the same level that must not import each other.
SIBLINGS = {("bench.sweep", "bench.report"), ("bench.report", "bench.sweep")}
BASE_MODULES = {"errors", "records", "cpu", "device"}


def part_of(module: str) -> str | None:
    """The layer of an `ecbench.*` module name, None for anything outside ecbench."""
    parts = module.split(".")
    if parts[0] != "ecbench" or len(parts) < 2:
        return None
    if parts[1] in ("compressors", "backbones"):
        return parts[1]
    if parts[1] != "bench" or len(parts) < 3:
        return "bench.base"
    return "bench.base" if parts[2] in BASE_MODULES else f"bench.{parts[2]}"


def source_files() -> list[tuple[str, Path]]:
    files = []
    for folder in ("compressors", "backbones", "bench"):
        for path in sorted((REPO / folder).rglob("*.py")):
            rel = path.relative_to(REPO).with_suffix("")
            name = ".".join(("ecbench",) + rel.parts)
            files.append((name.removesuffix(".__init__"), path))
    return files


def imported_modules(path: Path, module: str) -> set[str]:
    """Every module `path` imports, anywhere in it, as absolute names."""
    names = set()
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def allowed(source: str, target: str) -> bool:
    if source == target:
        return True
    if (source, target) in SIBLINGS:
        return False
    return LAYERS.index(target) < LAYERS.index(source)


@pytest.mark.parametrize("module,path", source_files(), ids=lambda x: str(x))
def test_imports_go_only_downward(module, path):
    source = part_of(module)
    wrong = sorted(name for name in imported_modules(path, module)
                   if (target := part_of(name)) is not None and not allowed(source, target))
    assert not wrong, f"{module} ({source}) imports upward: {wrong}"


def test_no_bare_top_level_imports_of_our_folders():
    """Everything imports through the ecbench namespace: `import bench` would only work from
    a checkout's root, never from an installed package."""
    bare = [(module, name) for module, path in source_files()
            for name in imported_modules(path, module)
            if name.split(".")[0] in ("bench", "compressors", "backbones")]
    assert not bare


def test_the_doors_test_sees_an_upward_import(tmp_path):
    """The check itself: a training module importing the report is caught."""
    bad = tmp_path / "train.py"
    bad.write_text("def f():\n    from ecbench.bench.report.tables import runs_table\n")
    names = imported_modules(bad, "ecbench.bench.training.train")
    assert not allowed("bench.training", part_of("ecbench.bench.report.tables"))
    assert "ecbench.bench.report.tables" in names


def test_the_wheel_installs_one_top_level_package(tmp_path):
    """Nothing named `bench` or `compressors` lands in site-packages: only `ecbench`."""
    import shutil
    import subprocess
    import sys
    import zipfile

    source = tmp_path / "src"  # a copy: building in place would leave build/ in the checkout
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
        ".git", ".venv*", "build", "*.egg-info", "results", "ecbench-results", ".ecbench",
        "__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--no-build-isolation", "--no-index", "-w", str(tmp_path), str(source)],
                   check=True, capture_output=True, timeout=300, cwd=tmp_path)
    wheel = next(tmp_path.glob("ecbench-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names}
    assert {top for top in tops if not top.endswith(".dist-info")} == {"ecbench"}
    assert "ecbench/bench/cli/main.py" in names and "ecbench/compressors/ccode.py" in names
    assert "ecbench/bench/sweeps/table4-tmall.toml" in names
