"""A user's runs stay apart from the project's curated records: the paper's tables and
figures are built only from the records `results/manifest.json` lists."""

from __future__ import annotations

import json
import shutil

import pytest

from ecbench.bench.records import RECORD_FOLDERS, curate, read_manifest, record_files
from ecbench.bench.report.all_tables import write_all
from helpers import run_cli


def stray_records(results):
    """What a user's runs leave in a results folder: a run on other data and a latency run of
    another compressor, beside the curated records."""
    run = json.loads(next((results / "runs").glob("synthetic-*.json")).read_text())
    run["key"] = "0123456789abcdef"
    run["test"] = {metric: 99.0 for metric in run["test"]}
    (results / "runs" / "synthetic-sasrec-full-0123456789abcdef.json").write_text(
        json.dumps(run))
    latency = json.loads(next((results / "bench").glob("latency-tmall-*.json")).read_text())
    for model in latency["models"]:
        model["label"] = f"{model['label']} (user)"
    (results / "bench" / "latency-synthetic-sasrec-hashing-t1.json").write_text(
        json.dumps(latency))


def test_tables_of_a_clone_with_user_runs_are_the_committed_ones(repo_root, tmp_path):
    results = tmp_path / "results"
    for folder in RECORD_FOLDERS:
        shutil.copytree(repo_root / "results" / folder, results / folder)
    shutil.copy(repo_root / "results" / "manifest.json", results)
    stray_records(results)

    written = write_all(results, tmp_path / "tables", tmp_path / "figures")

    assert written
    for path in written:
        committed = repo_root / "results" / path.parent.name / path.name
        assert path.read_bytes() == committed.read_bytes(), path.name

    # the control: read as a user's folder (no manifest), the stray runs do change them
    (results / "manifest.json").unlink()
    uncurated = write_all(results, tmp_path / "tables-all", tmp_path / "figures-all")
    changed = [p.name for p in uncurated
               if not (repo_root / "results" / p.parent.name.removesuffix("-all") / p.name
                       ).is_file()
               or p.read_bytes() != (repo_root / "results" / p.parent.name.removesuffix("-all")
                                     / p.name).read_bytes()]
    assert "table4.md" in changed or "runs.md" in changed


def test_every_committed_record_is_curated_and_every_curated_file_exists(repo_root):
    results = repo_root / "results"
    curated = read_manifest(results)
    on_disk = {f"{folder}/{p.name}" for folder in RECORD_FOLDERS
               for p in (results / folder).glob("*.json")}
    assert curated == on_disk


def test_a_user_folder_without_a_manifest_reads_every_record(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    for name in ("a.json", "b.json"):
        (runs / name).write_text("{}")
    assert [p.name for p in record_files(tmp_path, "runs")] == ["a.json", "b.json"]


def test_curate_copies_a_record_in_and_lists_it(tmp_path):
    curated, user = tmp_path / "curated", tmp_path / "user" / "runs"
    user.mkdir(parents=True)
    (user / "x-1.json").write_text('{"key": "1"}')
    (user / "x-2.json").write_text('{"key": "2"}')
    (curated / "runs").mkdir(parents=True)
    (curated / "runs" / "old.json").write_text('{"key": "0"}')

    curate(curated, [user / "x-1.json"])

    assert read_manifest(curated) == {"runs/x-1.json"}
    assert [p.name for p in record_files(curated, "runs")] == ["x-1.json"]
    assert (curated / "runs" / "x-1.json").read_text() == '{"key": "1"}'


def test_curate_never_overwrites_a_curated_record_with_other_numbers(tmp_path):
    curated, user = tmp_path / "curated", tmp_path / "user" / "runs"
    user.mkdir(parents=True)
    (curated / "runs").mkdir(parents=True)
    (curated / "runs" / "x-1.json").write_text('{"key": "1", "test": 20.0}')
    again = user / "x-1.json"
    again.write_text('{"key": "1", "test": 21.0}')  # the same run trained again
    (user / "x-2.json").write_text('{"key": "2"}')

    proc = run_cli(["curate", str(user / "x-2.json"), str(again),
                    "--results", str(curated)], tmp_path)
    assert proc.returncode != 0 and "--replace" in proc.stderr
    assert (curated / "runs" / "x-1.json").read_text() == '{"key": "1", "test": 20.0}'
    assert not (curated / "runs" / "x-2.json").exists()  # nothing is written

    (curated / "runs" / "x-3.json").write_text('{"key": "3"}')
    curate(curated, [curated / "runs" / "x-3.json"])  # a record already there: fine
    again.write_text('{"key": "1", "test": 20.0}')
    curate(curated, [again])  # the same content: fine
    again.write_text('{"key": "1", "test": 21.0}')
    curate(curated, [again], replace=True)
    assert (curated / "runs" / "x-1.json").read_text() == '{"key": "1", "test": 21.0}'


@pytest.mark.parametrize("name,text,message", [
    ("runs/broken.json", "{not json", "Expecting"),
    ("loose.json", "{}", "not a record file"),
    ("runs/list.json", "[1, 2]", "not a record"),
])
def test_curate_refuses_what_is_not_a_record_and_writes_nothing(tmp_path, name, text, message):
    source = tmp_path / "user" / name
    source.parent.mkdir(parents=True, exist_ok=True)
    source.write_text(text)
    proc = run_cli(["curate", str(source), "--results", str(tmp_path / "curated")], tmp_path)
    assert proc.returncode != 0
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "curated").exists()


def test_the_readme_headline_is_the_table_rendered_from_the_records(repo_root):
    from ecbench.bench.report.all_tables import readme_block

    readme = (repo_root / "README.md").read_text()
    where = readme_block(readme, "headline")
    assert where is not None, "README.md lacks its <!-- headline:start/end --> block"
    assert readme[where[0]:where[1]] == (repo_root / "results/tables/headline.md").read_text()


def test_fill_readme_block_replaces_only_the_block(tmp_path):
    from ecbench.bench.report.all_tables import fill_readme_block

    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- t:start -->\nold\n<!-- t:end -->\nrest\n")
    assert fill_readme_block(readme, "t", "new\n")
    assert readme.read_text() == "intro\n<!-- t:start -->\nnew\n<!-- t:end -->\nrest\n"
    assert not fill_readme_block(readme, "other", "x")
