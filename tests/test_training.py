"""Training end to end: a short real-data run, the CLI's records, resume after a kill, legacy mode."""

from __future__ import annotations

import glob
import json
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ecbench.backbones.dropout import FastDropout
from ecbench.bench.training.config import RunConfig
from ecbench.bench.errors import ConfigError, TrainingDiverged
from ecbench.bench.evaluation.metrics import CUTOFFS, metrics_from_ranks, popularity_ranks
from ecbench.bench.records import git_state, provenance
from ecbench.bench.training.runner import LEGACY_LABEL
from ecbench.bench.data.synthetic import synthetic_dataset
from ecbench.bench.training.train import Trainer, build_model, prepare
from helpers import ecbench_command, records_under, run_cli

METRICS = {f"{m}@{k}" for m in ("HR", "NDCG", "MRR") for k in CUTOFFS}
TINY_RUN = ["--epochs", "2", "--dim", "16", "--threads", "1", "--no-progress"]


# -- in-process training ---------------------------------------------------------------------

@pytest.mark.slow
def test_short_real_run_learns_and_beats_popularity(tmall_slice, tmp_path):
    config = RunConfig(data="tmall-first-3000", dim=32, epochs=2, patience=2,
                       backbone_options={"layers": 1, "heads": 1, "dropout": 0.5})
    prepared = prepare(config, tmall_slice)
    torch.manual_seed(0)
    model = build_model(config, tmall_slice.num_items)
    messages: list[str] = []
    state = Trainer(config, prepared, model, tmp_path / "ck.pt", log=messages.append).fit()

    assert state.epoch == 2 and len(state.history) == 2 and len(messages) == 2
    first, second = state.history
    assert second["train_loss"] < first["train_loss"]
    popularity = metrics_from_ranks(popularity_ranks(prepared.popularity,
                                                     prepared.validation.targets))
    best = max(e["validation"]["NDCG@10"] for e in state.history)
    assert best == state.best_value
    assert best > popularity["NDCG@10"] + 1.0, (best, popularity["NDCG@10"])


def _tiny_config(**overrides) -> RunConfig:
    options = dict(data="tiny", dim=16, epochs=2, patience=5, batch_size=128,
                   backbone_options={"dropout": 0.2})
    options.update(overrides)
    return RunConfig(**options)


class _Interrupted(Exception):
    pass


def _interrupt_at(epoch: int):
    """A log callback that stops training as epoch `epoch` reports, before its checkpoint."""
    def log(message: str) -> None:
        if message.startswith(f"epoch {epoch}:"):
            raise _Interrupted(message)
    return log


def _trainer(config, data, checkpoint: Path, log=lambda m: None, seed: int | None = None) -> Trainer:
    prepared = prepare(config, data)
    torch.manual_seed(config.seed if seed is None else seed)
    return Trainer(config, prepared, build_model(config, data.num_items), checkpoint, log=log)


def test_checkpoint_resume_continues_to_the_same_result(tiny_synthetic, tmp_path):
    config = _tiny_config(epochs=3)
    straight = _trainer(config, tiny_synthetic, tmp_path / "a.pt")
    straight.fit()

    interrupted = _trainer(config, tiny_synthetic, tmp_path / "b.pt", log=_interrupt_at(2))
    with pytest.raises(_Interrupted):
        interrupted.fit()
    # a new process: different RNG state and fresh weights until the checkpoint is loaded
    resumed = _trainer(config, tiny_synthetic, tmp_path / "b.pt", seed=123)
    assert resumed.load_checkpoint()
    assert resumed.state.epoch == 1 and not resumed.state.finished
    resumed.fit()

    assert resumed.state.epoch == straight.state.epoch == 3
    assert [e["validation"] for e in resumed.state.history] == \
           [e["validation"] for e in straight.state.history]
    assert [e["train_loss"] for e in resumed.state.history] == \
           [e["train_loss"] for e in straight.state.history]
    for name, value in straight.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[name], value, rtol=0, atol=0)


def test_missing_checkpoint_means_starting_fresh(tiny_synthetic, tmp_path):
    config = _tiny_config()
    trainer = Trainer(config, prepare(config, tiny_synthetic),
                      build_model(config, tiny_synthetic.num_items), tmp_path / "none.pt")
    assert trainer.load_checkpoint() is False
    assert trainer.state.epoch == 0


def test_diverging_loss_stops_training_with_a_clear_error(tiny_synthetic, tmp_path):
    config = _tiny_config(lr=1e30)
    with pytest.raises(TrainingDiverged, match=r"loss became nan at epoch 1.*no checkpoint"):
        _trainer(config, tiny_synthetic, tmp_path / "nan.pt").fit()


def test_dropout_epochs_turn_dropout_off_after_the_first_epochs(tiny_synthetic, tmp_path):
    """`--dropout-epochs 1`: dropout in epoch 1 only (how the paper's released code trains),
    the rest of the model still in training mode."""
    config = _tiny_config(epochs=3, dropout_epochs=1)
    trainer = _trainer(config, tiny_synthetic, tmp_path / "d.pt")
    seen: list[tuple[bool, bool]] = []
    dropout = next(m for m in trainer.model.modules() if isinstance(m, FastDropout))
    dropout.register_forward_hook(
        lambda module, args, out: seen.append((module.training, trainer.model.training)))
    for epoch in (1, 2, 3):
        seen.clear()
        trainer.train_epoch(epoch)
        assert set(seen) == {(epoch == 1, True)}, epoch
    with pytest.raises(ConfigError, match="--dropout-epochs"):
        _tiny_config(dropout_epochs=-1)


def test_patience_stops_training_early(tiny_synthetic, tmp_path):
    # A learning rate too small to matter: validation never improves on epoch 1.
    config = _tiny_config(lr=1e-12, epochs=6, patience=1)
    trainer = _trainer(config, tiny_synthetic, tmp_path / "p.pt")
    trainer.fit()
    assert trainer.state.finished and trainer.state.epoch < 6
    assert trainer.state.best_epoch == 1


def test_patience_waits_for_an_objective_to_settle(tiny_synthetic, tmp_path):
    # The same stalled run, but its objective (like a distillation annealing its mixup) only
    # trains the deployed model from epoch 4: patience may not end it before that.
    config = _tiny_config(lr=1e-12, epochs=6, patience=1)
    trainer = _trainer(config, tiny_synthetic, tmp_path / "s.pt")
    trainer.objective.settled_epoch = 4
    trainer.fit()
    assert trainer.state.finished and trainer.state.epoch == 4


# -- the command line: records and reuse -----------------------------------------------------

@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_run")
    results, work = root / "results", root / "work"
    args = ["run", *TINY_RUN, "--results", str(results), "--workdir", str(work)]
    started = time.perf_counter()
    first = run_cli(args, cwd=root)
    seconds = time.perf_counter() - started
    return {"root": root, "results": results, "work": work, "args": args, "first": first,
            "seconds": seconds}


@pytest.mark.slow
def test_cli_run_writes_a_complete_record(cli_run, repo_root):
    proc = cli_run["first"]
    assert proc.returncode == 0, proc.stderr
    records = records_under(cli_run["results"])
    assert len(records) == 1
    record = json.loads(records[0].read_text())
    assert str(records[0]) in proc.stdout  # "record: PATH"

    for key in ("config", "test", "history", "provenance", "dataset", "size", "selection",
                "baselines"):
        assert key in record
    assert record["config"]["epochs"] == 2 and record["config"]["dim"] == 16
    assert set(record["test"]) == METRICS
    assert [e["epoch"] for e in record["history"]] == [1, 2]
    assert all(set(e["validation"]) == METRICS for e in record["history"])
    assert record["dataset"]["checksum"] == synthetic_dataset().checksum
    assert record["size"]["item_storage"]["total_bytes"] == record["dataset"]["num_items"] * 16 * 4
    assert record["size"]["item_storage"]["byte_ratio"] == 1.0
    # a trained dense table tells every item apart, and float scores almost never tie
    table = record["deployed_table"]
    assert table["distinct_item_vectors"] == table["real_items"] == record["dataset"]["num_items"] - 1
    assert 0.0 <= table["test_labels_tied_percent"] < 1.0
    prov = record["provenance"]
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo_root, capture_output=True,
                          text=True).stdout.strip()
    assert prov["git"]["commit"] == head and re.fullmatch(r"[0-9a-f]{40}", head)
    assert prov["versions"]["torch"] == torch.__version__
    assert prov["machine"]["torch_threads"] == 1 and prov["machine"]["cores"] >= 1
    assert len(prov["machine"]["load_average"]) == 3
    assert record["selection"]["on"] == "validation"
    assert record["test"]["NDCG@10"] > record["baselines"]["popularity"]["NDCG@10"]
    by_case = record["test_by_case"]
    assert by_case["repeat"]["share"] + by_case["new"]["share"] == pytest.approx(100.0)
    assert by_case["hot_label"]["share"] + by_case["cold_label"]["share"] == pytest.approx(100.0)
    overall = sum(by_case[g]["share"] * by_case[g]["HR@10"] for g in ("repeat", "new")) / 100
    assert overall == pytest.approx(record["test"]["HR@10"])
    # the session recency ranking hits repeat cases only, and ranks the rest last
    recency = record["baselines"]["session recency"]
    assert 0 < recency["HR@10"] <= by_case["repeat"]["share"]
    assert Path(record["model_file"]).is_file()
    assert not list((cli_run["work"] / "checkpoints").glob("*.pt"))  # removed once recorded


def test_provenance_records_a_command_that_can_be_run_again(monkeypatch):
    argv = ["/x/ecbench", "bench", "latency", "--compressor", "sttd --rank 64", "--data", "tmall"]
    monkeypatch.setattr(sys, "argv", argv)
    command = provenance(1)["command"]
    assert shlex.split(command) == ["ecbench", *argv[1:]]  # the spec stays one argument


def test_a_results_change_does_not_make_the_code_dirty(tmp_path):
    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "run.json").write_text("{}")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "init")
    assert git_state(tmp_path)["dirty"] is False
    (tmp_path / "results" / "run.json").write_text('{"written": "by another run"}')
    assert git_state(tmp_path)["dirty"] is False
    (tmp_path / "code.py").write_text("x = 2\n")
    assert git_state(tmp_path)["dirty"] is True


@pytest.mark.slow
def test_cli_rerun_reuses_the_record(cli_run):
    assert cli_run["first"].returncode == 0, cli_run["first"].stderr
    [record] = records_under(cli_run["results"])
    before = record.read_bytes()
    again = run_cli(cli_run["args"], cwd=cli_run["root"])
    assert again.returncode == 0, again.stderr
    assert "reusing" in again.stderr
    assert "epoch 1" not in again.stderr  # nothing was trained
    assert records_under(cli_run["results"]) == [record]
    assert record.read_bytes() == before


# -- resume after a kill ---------------------------------------------------------------------

def _history_values(record):
    return [(e["epoch"], e["train_loss"], e["validation"]) for e in record["history"]]


@pytest.mark.slow
def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path):
    args = ["run", "--epochs", "3", "--dim", "16", "--threads", "1", "--no-progress"]
    killed_results, killed_work = tmp_path / "k-results", tmp_path / "k-work"
    own = ["--results", str(killed_results), "--workdir", str(killed_work)]
    proc = subprocess.Popen(ecbench_command() + args + own, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    try:
        while not glob.glob(str(killed_work / "checkpoints" / "*.pt")):
            if proc.poll() is not None:
                pytest.fail(f"run ended before writing a checkpoint: {proc.communicate()[1]}")
            if time.monotonic() > deadline:
                pytest.fail("no checkpoint within 120 s")
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    assert records_under(killed_results) == []

    resumed = run_cli(args + own + ["--resume"], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert re.search(r"resuming from .* after epoch [12]", resumed.stderr), resumed.stderr

    straight_results = tmp_path / "s-results"
    straight = run_cli(args + ["--results", str(straight_results),
                               "--workdir", str(tmp_path / "s-work")], cwd=tmp_path)
    assert straight.returncode == 0, straight.stderr

    [a] = [json.loads(p.read_text()) for p in records_under(killed_results)]
    [b] = [json.loads(p.read_text()) for p in records_under(straight_results)]
    assert a["key"] == b["key"]
    assert len(a["resumed"]) == 1 and b["resumed"] == []  # the record says it was resumed
    assert a["resumed"][0]["git"]["commit"] == a["provenance"]["git"]["commit"]
    assert a["selection"]["epoch"] == b["selection"]["epoch"]
    for metric in METRICS:
        assert a["test"][metric] == pytest.approx(b["test"][metric], abs=1e-6)
    assert len(a["history"]) == len(b["history"]) == 3
    for ea, eb in zip(a["history"], b["history"]):
        assert ea["epoch"] == eb["epoch"]
        assert ea["train_loss"] == pytest.approx(eb["train_loss"], abs=1e-6)
        for metric in METRICS:
            assert ea["validation"][metric] == pytest.approx(eb["validation"][metric], abs=1e-6)


# -- the legacy protocol ---------------------------------------------------------------------

@pytest.mark.slow
def test_select_on_test_is_labelled_legacy_with_per_metric_epochs(tmp_path, cli_run):
    results = tmp_path / "results"
    proc = run_cli(["run", *TINY_RUN, "--select-on", "test", "--results", str(results),
                    "--workdir", str(tmp_path / "work")], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("NOTE: legacy")
    [record] = [json.loads(p.read_text()) for p in records_under(results)]
    selection = record["selection"]
    assert selection["on"] == "test"
    assert "legacy" in selection["label"] and selection["label"] == LEGACY_LABEL
    # as the paper: every training session is trained on, nothing held out or evaluated
    data = record["dataset"]
    assert data["validation"] is None and record["validation_at_selected"] is None
    assert all("validation" not in e for e in record["history"])
    assert cli_run["first"].returncode == 0, cli_run["first"].stderr  # the same run, honest
    [held_out] = [json.loads(p.read_text()) for p in records_under(cli_run["results"])]
    split = held_out["dataset"]
    assert data["fit_examples"] > split["fit_examples"]
    assert data["fit_examples"] == split["fit_examples"] + split["validation"]["examples"]
    epochs = record["test_epochs"]
    assert set(epochs) == METRICS
    for metric, epoch in epochs.items():
        assert 1 <= epoch <= selection["epochs_run"]
        per_epoch = [e["test"][metric] for e in record["history"]]
        assert record["test"][metric] == max(per_epoch)
        assert record["test"][metric] == record["history"][epoch - 1]["test"][metric]


@pytest.mark.slow
def test_a_legacy_mixed_table_run_records_its_compressed_table_figures_beside(tmp_path):
    """The paper's student protocol (test selection, the teacher's table mixed into scoring):
    the record also holds what the same model scores with its compressed table alone."""
    results = tmp_path / "results"
    proc = run_cli(["run", "--compressor", "ccode", "--M", "3", "--K", "16", "--eta", "0.8",
                    "--eval-table", "mixed", "--select-on", "test", "--epochs", "1", "--dim",
                    "16", "--threads", "1", "--no-progress", "--results", str(results),
                    "--workdir", str(tmp_path / "work")], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "(compressed table alone)" in proc.stdout
    record = json.loads(next(p for p in records_under(results) if "ccode" in p.name).read_text())
    alone, mixed = record["test_compressed_table"], record["test"]
    assert set(alone) == set(mixed) and alone != mixed
    # the teacher's table mixed in scores far better than the codes alone can
    assert mixed["HR@10"] > alone["HR@10"]
    teacher = json.loads(next(p for p in records_under(results) if "full" in p.name).read_text())
    assert teacher["test_compressed_table"] is None


@pytest.mark.slow
def test_validation_selected_record_has_no_test_epochs(cli_run):
    assert cli_run["first"].returncode == 0, cli_run["first"].stderr
    [record] = [json.loads(p.read_text()) for p in records_under(cli_run["results"])]
    assert record["test_epochs"] is None
    assert "test" not in record["history"][0]  # test was never looked at while training
    assert "legacy" not in record["selection"]["label"]


@pytest.mark.slow
def test_runs_table_is_rendered_from_the_records(cli_run):
    record = json.loads(records_under(cli_run["results"])[0].read_text())
    proc = run_cli(["table", "runs", "--results", str(cli_run["results"]),
                    "--out", str(cli_run["results"] / "runs.md")], cwd=cli_run["results"])
    assert proc.returncode == 0, proc.stderr
    row = next(line for line in proc.stdout.splitlines() if line.startswith("| synthetic"))
    assert f"{record['test']['NDCG@10']:.2f}" in row
    assert f"validation ({record['selection']['epoch']}/2)" in row
    summary = run_cli(["table", "summary", "--results", str(cli_run["results"])],
                      cwd=cli_run["results"])
    assert summary.returncode == 0 and f"{record['test']['NDCG@10']:.2f}" in summary.stdout
    assert (cli_run["results"] / "runs.md").read_text().strip() == proc.stdout.strip()


@pytest.mark.slow
def test_refit_retrains_on_all_training_sessions_for_the_selected_epochs(tmp_path):
    results = tmp_path / "results"
    proc = run_cli(["run", *TINY_RUN, "--refit", "--results", str(results), "--workdir",
                    str(tmp_path / "work")], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    record = json.loads(records_under(results)[0].read_text())
    refit = record["selection"]["refit"]
    assert record["config"]["refit"] is True
    assert refit["epochs"] == record["selection"]["epoch"]
    assert refit["examples"] == record["dataset"]["fit_examples"] + \
        record["dataset"]["validation"]["examples"]
    assert [e["epoch"] for e in refit["history"]] == list(range(1, refit["epochs"] + 1))
    assert "refit" in proc.stdout


@pytest.mark.slow
def test_refit_reuses_the_recorded_first_phase(cli_run, tmp_path):
    results = tmp_path / "results"
    shutil.copytree(cli_run["results"], results)  # leave the shared fixture's folder alone
    proc = run_cli(["run", *TINY_RUN, "--refit", "--results", str(results),
                    "--workdir", str(tmp_path / "work")], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "epoch count chosen by the recorded run" in proc.stderr
    assert "epoch 1: loss" not in proc.stderr  # no selection phase was trained again
    records = [json.loads(p.read_text()) for p in records_under(results)]
    plain = next(r for r in records if not r["config"].get("refit"))
    refit = next(r for r in records if r["config"].get("refit"))
    assert refit["history"] == plain["history"]
    assert refit["selection"]["refit"]["first_phase_record"].endswith(f"{plain['key']}.json")


def test_ccode_codes_freeze_mid_training_and_the_history_says_when(tiny_synthetic, tmp_path):
    config = _tiny_config(epochs=3, compressor="ccode",
                          compressor_options={"M": 2, "K": 32, "freeze_codes_after": 1})
    trainer = _trainer(config, tiny_synthetic, tmp_path / "c.pt")
    table = trainer.model.compressor
    table.init_from_table(torch.randn(tiny_synthetic.num_items, 16))
    trainer.fit()
    history = trainer.state.history
    assert "codes_frozen" not in history[0] and "codes_frozen" not in history[2]
    assert history[1]["codes_frozen"]["collisions"] == int(table.collisions)
    frozen = table.codes.clone()
    table.deploy()
    assert table.deployed and torch.equal(table.codes, frozen)


def test_export_command_writes_an_artefact_that_agrees_with_eager(cli_run):
    record_path = records_under(cli_run["results"])[0]
    out = cli_run["root"] / "exported.ptl"
    proc = run_cli(["export", str(record_path), "--format", "torchscript", "--workdir",
                    str(cli_run["work"]), "--out", str(out)], cwd=cli_run["root"])
    assert proc.returncode == 0, proc.stderr
    assert out.is_file() and f"{out}: {out.stat().st_size} bytes" in proc.stdout
    assert "top-20 identical: True" in proc.stdout


def test_analyse_reproduces_the_recorded_test_and_breaks_it_down(cli_run):
    record_path = records_under(cli_run["results"])[0]
    record = json.loads(record_path.read_text())
    proc = run_cli(["analyse", str(record_path), "--workdir", str(cli_run["work"]),
                    "--results", str(cli_run["results"])], cwd=cli_run["root"])
    assert proc.returncode == 0, proc.stderr
    written = cli_run["results"] / "analysis" / f"cases-{record_path.stem}.json"
    analysis = json.loads(written.read_text())
    assert analysis["test"] == record["test"]
    assert analysis["analysed"] == {"finished": record["finished"], "test": record["test"]}
    assert analysis["test_by_case"] == record["test_by_case"]
    assert "repeat" in proc.stdout and "cold_label" in proc.stdout
    # what outranks the missed labels: every missed case counted in exactly one of repeat/new
    missed = analysis["missed_top"]
    n = record["dataset"]["test_examples"]
    assert sum(missed[g]["missed_cases"] for g in ("repeat", "new")) == round(
        n * (1 - record["test"]["HR@10"] / 100))
    assert all(0 <= m["in_session"] <= 100 and 0 <= m["hot"] <= 100 for m in missed.values())

