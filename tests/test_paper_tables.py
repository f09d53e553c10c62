"""The paper's tables from records: honest runs only, chosen on validation, seeds averaged."""

from __future__ import annotations

import json

import pytest
from chart_marks import bars, svg_text
from helpers import run_cli
from paper_records import KD
from paper_records import distilled as _distilled
from paper_records import record as _record
from paper_records import student as _student

from ecbench.bench.report.figures import fig3
from ecbench.bench.report.paper_tables import (ablation_of, ablation_rows, ablation_table,
                                               at_paper_settings, table3, table4)
from ecbench.bench.report.protocol_table import protocol_table
from ecbench.bench.report.tables import RUN_METRICS

def _row(text: str, name: str) -> str:
    return next(line for line in text.splitlines() if line.startswith(f"| {name} "))


def test_only_honest_runs_at_the_papers_settings_qualify():
    assert at_paper_settings(_record(20, 20))
    assert not at_paper_settings(_record(20, 20, select_on="test"))
    assert not at_paper_settings(_record(20, 20, refit=True))
    assert not at_paper_settings(_record(20, 20, l2=0.0))
    assert not at_paper_settings(_record(20, 20, dim=64))
    assert not at_paper_settings(_student(20, 20, compressor_options={
        "M": 4, "K": 32, "eval_table": "mixed"}))
    assert not at_paper_settings(_record(20, 20, backbone_options={"layers": 2, "heads": 1,
                                                                   "dropout": 0.5}))
    # an option the preset does not set is a departure too (the released code's skip x 4)
    assert not at_paper_settings(_record(20, 20, backbone_options={
        "layers": 1, "heads": 1, "dropout": 0.5, "ffn_residual": 4.0}))
    assert not at_paper_settings(_record(20, 20, dropout_epochs=1))


def test_table3_takes_the_best_validation_config_not_the_best_test_one():
    records = [_student(30.0, 20.0, distill=KD),
               _student(10.0, 25.0, distill={**KD, "epochs": 6})]
    row = _row(table3(records), "Student")
    assert "10.00 (23.66)" in row and "30.00" not in row


def test_only_the_papers_method_takes_the_student_cell_and_variants_get_labelled_rows():
    faithful = _student(18.0, 10.0, distill=KD)
    frozen = _student(25.0, 30.0, distill=KD, compressor_options={
        "M": 4, "K": 32, "eta": 0.8, "freeze_codes_after": 0})
    copied = _student(24.0, 29.0, distill={**KD, "teacher_table": "copy"})
    no_mixup = _student(23.0, 28.0, distill=KD, compressor_options={"M": 4, "K": 32})
    text = table3([faithful, frozen, copied, no_mixup])
    assert "18.00 (23.66)" in _row(text, "Student")  # better validation elsewhere: variants
    assert "25.00" in _row(text, "Student, ours: codes frozen at init")
    assert "24.00" in _row(text, "Student, ours: teacher table copied")
    assert "23.00" in _row(text, "Student, ours: no mixup in pretraining")


def test_table3_averages_seeds_and_keeps_legacy_runs_to_their_own_column():
    records = [_record(26.0, 20.0, seed=0), _record(28.0, 20.0, seed=1),
               _record(50.0, 90.0, select_on="test")]
    text = table3(records)
    cells = [c.strip() for c in _row(text, "Teacher").strip("|").split("|")]
    assert cells[3] == "27.00 ± 1.41 (27.86)"  # HR@10: mean, sample deviation (26, 28), paper
    assert cells[9] == "50.00 / 50.00"  # the paper's protocol, Tmall: the legacy run alone
    assert cells[10] == "-"  # none on RetailRocket
    assert "2 seed(s)" in text and "- (19.58)" in _row(text, "GRU4Rec")


def _sttd_at_30x(test: float, validation: float, **config) -> dict:
    run = _record(test, validation, compressor="sttd", paper_ratio=30.2, **config)
    run["size"]["item_storage"]["byte_ratio"] = 30.2
    return run


def test_an_epoch_capped_run_fills_no_cell_of_the_papers_tables():
    # a frontier point (three epochs at most) beside a run trained until early stopping
    capped = _sttd_at_30x(30.0, 40.0, epochs=3)
    trained = _sttd_at_30x(24.0, 20.0, epochs=30)
    assert "24.00 (25.22)" in _row(table3([capped, trained]), "OD-Rec")
    assert "- (25.22)" in _row(table3([capped]), "OD-Rec")
    legacy = _record(50.0, 90.0, select_on="test", epochs=3)  # nor the paper's protocol column
    assert [c.strip() for c in _row(table3([legacy]), "Teacher").strip("|").split("|")][9] == "-"
    assert at_paper_settings(capped)  # still at the paper's settings: the repeat table takes it
    teachers = [_record(26.0, 20.0, epochs=30), _record(31.0, 21.0, epochs=3)]  # nor the gap
    table = protocol_table(teachers)
    assert "26.00" in table and "31.00" not in table


def test_od_rec_is_sttd_near_the_papers_ratio_of_30():
    near = _record(24.0, 20.0, compressor="sttd", paper_ratio=30.9)
    near["size"]["item_storage"]["byte_ratio"] = 30.2  # picked by the bytes a phone stores
    far = _record(26.0, 30.0, compressor="sttd", paper_ratio=30.0)
    far["size"]["item_storage"]["byte_ratio"] = 90.0
    assert "24.00 (25.22)" in _row(table3([near, far]), "OD-Rec")


def _train_benchmark(run: dict, seconds: float, *, threads: int = 1, date: str = "2026-01-01",
                     relative: float | None = 1.19, steps: int = 300,
                     device: str | None = None) -> dict:
    measurements = {"seconds_per_epoch": seconds, "timed_steps": steps}
    if relative is not None:
        measurements["cost_vs_teacher"] = relative
    return {"benchmark": "train", "dataset": run["dataset"]["name"], "config": run["config"],
            "measurements": measurements, "date": date,
            "provenance": {"machine": {"torch_threads": threads}},
            **({"device": {"type": device}} if device else {})}


def test_table3_takes_the_training_cost_from_a_one_thread_benchmark_of_the_same_training():
    narm = _record(24.0, 20.0, backbone="narm")
    other_width = _record(24.0, 20.0, backbone="narm", dim=64)
    benchmarks = [_train_benchmark(narm, 911.0), _train_benchmark(narm, 300.0, threads=2),
                  _train_benchmark(narm, 905.0, date="2025-01-01"),
                  _train_benchmark(other_width, 50.0),
                  # a GPU's timing, and a shorter (newer) one, are not the CPU cost
                  _train_benchmark(narm, 13.0, date="2026-06-01", device="cuda"),
                  _train_benchmark(narm, 950.0, date="2026-06-01", steps=200)]
    def costs(text: str, model: str) -> list[str]:  # the last two cells: s/epoch per dataset
        return [cell.strip() for cell in _row(text, model).split("|")[-3:-1]]

    assert costs(table3([narm], train_benchmarks=benchmarks), "NARM") == ["911 (1.19x)", "-"]
    # no benchmark of that training: the run's own wall time, starred
    assert costs(table3([narm]), "NARM") == ["100*", "-"]
    student = _student(17.0, 12.0, distill=KD)
    undistilled = _train_benchmark(_student(17.0, 12.0), 400.0)
    assert "100*" in _row(table3([student], train_benchmarks=[undistilled]), "Student")


@pytest.mark.parametrize("distill, expected", [
    (None, "Stu-base"), (KD, "Student"), ({**KD, "contrastive": False}, "Stu-w/o-c"),
    ({**KD, "bidirectional": False}, "Stu-w/o-b"), ({**KD, "soft": False}, "Stu-w/o-s"),
    ({**KD, "eta": 0.0}, "Stu-w/o-m"), ({**KD, "soft": False, "eta": 0.0}, None),
])
def test_ablation_names(distill, expected):
    assert ablation_of({"distill": distill}) == expected


def test_ablation_gain_of_the_student_over_stu_base_beside_the_papers():
    base = _student(20.0, 10.0)
    records = [base, _distilled(base, 22.0, 12.0), _distilled(base, 21.0, 11.0, soft=False),
               _student(99.0, 99.0, compressor_options={"M": 2, "K": 32}, distill=KD)]
    text = ablation_table(records)
    student = next(line for line in text.splitlines() if "| Student " in line)
    assert "10.00 (10.55)" in student and "10.00 (10.20)" in student
    assert "| Stu-w/o-s " in text and "99.00" not in text


def test_ablation_compares_each_student_with_the_stu_base_it_was_distilled_from():
    # a better Stu-base (other codes) with no students of its own must not become the
    # reference of students distilled from another one
    encoder_codes = _student(20.0, 10.0)
    kmeans_codes = _student(25.0, 14.0, compressor_options={
        "M": 4, "K": 32, "eta": 0.8, "initial_codes": "kmeans", "freeze_codes_after": 0})
    records = [encoder_codes, kmeans_codes, _distilled(encoder_codes, 22.0, 12.0),
               _distilled(encoder_codes, 21.0, 11.0, eta=0.0)]
    text = ablation_table(records)
    rows = {cells[3]: cells for cells in
            ([c.strip() for c in line.split("|")] for line in text.splitlines()
             if line.startswith("| tmall") and " ours" not in line)}
    # k-means codes are a variant of ours: a family of its own, labelled
    assert any(kmeans_codes["key"] + " ours" in line for line in text.splitlines())
    assert set(rows) == {"Stu-base", "Stu-w/o-m", "Student"}
    assert {cells[2] for cells in rows.values()} == {encoder_codes["key"]}
    assert rows["Stu-base"][6] == "20.00" and rows["Student"][-3] == "10.00 (10.55)"
    assert rows["Stu-w/o-m"][-3] == "5.00"


def test_ablation_keeps_students_with_the_training_they_were_distilled_from():
    # a rerun of the Stu-base's settings (a fresh machine remakes its weights) replaces its
    # record under the same key; students distilled from the earlier training keep the metrics
    # their records took of it, and the later students are compared with the rerun
    earlier = _student(20.0, 10.0)
    old_students = [_distilled(earlier, 22.0, 12.0), _distilled(earlier, 21.0, 11.0, eta=0.0)]
    rerun = {**_student(25.0, 10.0), "key": earlier["key"]}
    records = [rerun, *old_students, _distilled(rerun, 26.0, 12.0, soft=False)]
    text = ablation_table(records)
    rows = [[c.strip() for c in line.split("|")] for line in text.splitlines()
            if line.startswith("| tmall")]
    by_name = {(cells[2], cells[3]): cells for cells in rows}
    later, before = earlier["key"], f"{earlier['key']} (earlier training)"
    assert set(by_name) == {(later, "Stu-base"), (later, "Stu-w/o-s"), (before, "Stu-base"),
                            (before, "Stu-w/o-m"), (before, "Student")}
    assert by_name[(later, "Stu-base")][6] == "25.00" and by_name[(before, "Stu-base")][6] == "20.00"
    assert by_name[(later, "Stu-w/o-s")][-3] == "4.00"
    assert by_name[(before, "Student")][-3] == "10.00 (10.55)"
    assert [cells[2] for cells in rows][0] == later  # the recorded training first
    assert "as the students distilled from it recorded it" in text
    assert bars(fig3(records)["fig3-tmall"])[("Student (earlier)", "HR@10")] == 22.0


def test_ablation_gain_over_the_stu_base_seeds_each_student_was_distilled_from():
    # two seeds of one Stu-base form one family; a student's gain is over its own seeds' Stu-base
    bases = [_student(20.0, 10.0, seed=0), _student(22.0, 10.0, seed=1)]
    records = [*bases, _distilled(bases[1], 24.2, 12.0), _distilled(bases[0], 21.0, 11.0, soft=False)]
    rows = {row.name: row for row in ablation_rows(records)}
    assert rows["Stu-base"].mean("HR@10") == pytest.approx(21.0)
    assert rows["Student"].gain("HR@10") == pytest.approx(10.0)
    assert rows["Stu-w/o-s"].gain("HR@10") == pytest.approx(5.0)
    assert rows["Student"].base_label == f"{bases[0]['key']} (2 seeds)"
    seeds = {line.split("|")[3].strip(): line.split("|")[4].strip()
             for line in ablation_table(records).splitlines() if line.startswith("| tmall")}
    assert seeds == {"Stu-base": "0, 1", "Student": "1", "Stu-w/o-s": "0"}  # what each mean is of


def test_table4_rows_by_codebook_shape_with_both_ratios():
    records = [_student(17.0, 12.0),
               _student(22.0, 15.0, compressor_options={"M": 4, "K": 256, "eta": 0.8},
                        paper_ratio=17.7)]
    text = table4(records)
    assert "tmall: 2 of the paper's 20 (M, K)" in text
    row = next(line for line in text.splitlines() if "|  256 |" in line or "| 256 |" in line)
    assert "17.70 (18.00)" in row and "22.00 (27.86)" in row


def test_table4_leaves_out_frontier_points_and_counts_only_the_papers_shapes():
    """A ccode run whose shape a byte budget chose is the frontier's; a shape off the paper's
    grid is a row but not one of its 20 cells."""
    budgeted = _student(15.0, 11.0, compressor_options={"M": 12, "K": 32, "eta": 0.8},
                        ratio=30.0)
    off_grid = _student(16.0, 12.0, compressor_options={"M": 8, "K": 32, "eta": 0.8})
    text = table4([_student(17.0, 12.0), budgeted, off_grid])
    assert "tmall: 1 of the paper's 20 (M, K)" in text
    assert "|  12 |" not in text and "|   8 |" in text


def test_table_commands_read_the_run_records(tmp_path):
    runs = tmp_path / "results" / "runs"
    runs.mkdir(parents=True)
    base, teacher = _student(17.0, 12.0), _record(26.0, 20.0)
    for record in (teacher, base, _distilled(base, 18.0, 13.0)):
        (runs / f"{record['key']}.json").write_text(json.dumps(record))
    (tmp_path / "results" / "bench").mkdir()
    (tmp_path / "results" / "bench" / "train-tmall-sasrec-full.json").write_text(
        json.dumps(_train_benchmark(teacher, 459.0, relative=None)))
    for which, expected in (("3", "26.00 (27.86)"), ("3", "| 459 "), ("4", "| Student "),
                            ("ablation", "5.88"), ("protocol", "| Stu-base | paper: ")):
        done = run_cli(["table", which, "--results", str(tmp_path / "results")], tmp_path)
        assert done.returncode == 0, done.stderr
        assert expected in done.stdout, done.stdout


def test_protocol_table_sets_legacy_scores_beside_one_deployed_model_and_the_papers():
    from ecbench.bench.report.protocol_table import protocol_rows

    legacy = {"select_on": "test"}
    mixed = {"eval_table": "mixed"}  # the default codes: M=4, K=32
    base = _student(17.0, 12.0)
    legacy_student = _student(26.0, 0.0, compressor_options=mixed, distill=KD, **legacy)
    legacy_student["test_compressed_table"] = {m: 15.0 for m in RUN_METRICS}
    older_mixed = _student(25.0, 11.0, compressor_options=mixed)  # no deployed scores recorded
    records = [_record(26.6, 20.0), _record(27.9, 0.0, **legacy), base,
               _distilled(base, 17.5, 12.5), legacy_student, older_mixed,
               _student(99.0, 9.0, l2=0.0), _student(98.0, 9.0, compressor_options={"M": 2})]
    rows = {(row[0], row[1], row[-1]): row for row in protocol_rows(records)}
    tmall = [key for key in rows if key[0] == "tmall"]
    assert [(model, key) for _, model, key in tmall] == [
        ("Teacher", "-"), ("Teacher", records[1]["key"]), ("Teacher", records[0]["key"]),
        ("Stu-base", "-"), ("Stu-base", older_mixed["key"]), ("Stu-base", base["key"]),
        ("Student", "-"), ("Student", legacy_student["key"]), ("Student", records[3]["key"])]
    student = rows["tmall", "Student", legacy_student["key"]]
    assert student[2] == "legacy: best test epoch per metric, mixed table"
    assert student[3] == "KD" and student[5:9] == [26.0, 26.0, 15.0, 15.0]
    # a legacy teacher's scores are each metric's best epoch: no one deployed model
    assert rows["tmall", "Teacher", records[1]["key"]][5:9] == [27.9, 27.9, None, None]
    assert rows["tmall", "Teacher", records[0]["key"]][5:9] == [26.6, 26.6, 26.6, 26.6]
    assert rows["tmall", "Stu-base", older_mixed["key"]][7:9] == [None, None]
    assert rows["tmall", "Student", "-"][5:7] == [27.76, 19.67]  # Table 3
    stu_base = rows["tmall", "Stu-base", "-"][5:7]  # implied by the student's Fig. 3 gain
    assert stu_base == pytest.approx([27.76 / 1.1055, 19.67 / 1.1020])
    assert [key[1] for key in rows if key[0] == "retailrocket"] == [
        "Teacher", "Stu-base", "Student"]  # the paper's figures, no runs yet


def test_a_case_analysis_of_an_earlier_training_gives_way_to_the_rerun_record(tmp_path):
    from ecbench.bench.report.all_tables import case_analyses

    results = tmp_path / "results"
    (results / "analysis").mkdir(parents=True)
    rerun, kept = _record(26.0, 20.0), _record(25.0, 19.0)
    rerun["test_by_case"] = {"repeat": {"HR@10": 50.0}}
    for record, test in ((rerun, 26.5), (kept, 25.0)):  # the first analysed another training
        analysis = {"analysis": "cases", "key": record["key"], "dataset": "tmall",
                    "test": {m: test for m in RUN_METRICS},
                    "test_by_case": {"repeat": {"HR@10": 1.0}}}
        (results / "analysis" / f"cases-{record['key']}.json").write_text(json.dumps(analysis))
    chosen = {c["key"]: c for c in case_analyses(results, [rerun, kept])}
    assert chosen[rerun["key"]]["test_by_case"]["repeat"]["HR@10"] == 50.0  # the record's own
    assert chosen[kept["key"]].get("analysis") == "cases"  # the analysis of this training


def test_a_code_analysis_of_an_earlier_training_is_left_out(tmp_path):
    from ecbench.bench.report.all_tables import analyses

    results = tmp_path / "results"
    (results / "analysis").mkdir(parents=True)
    rerun, named, older, current = (_student(17.0 + i, 12.0) for i in range(4))
    for record in (rerun, named, older, current):
        record["finished"] = "2026-11-30T04:20:56+00:00"
    written = {  # key -> what the analysis says of the training it analysed
        rerun["key"]: {"analysed": {"finished": "2026-11-28T15:36:42+00:00",
                                    "test": rerun["test"]}},
        named["key"]: {"analysed": {"finished": named["finished"], "test": named["test"]}},
        older["key"]: {"date": "2026-11-28T19:04:23+00:00"},  # made before the rerun ended
        current["key"]: {"date": "2026-11-30T05:49:21+00:00"}}
    for key, fields in written.items():
        analysis = {"analysis": "codes", "key": key, "dataset": "tmall", **fields}
        (results / "analysis" / f"codes-{key}.json").write_text(json.dumps(analysis))
    kept = {a["key"] for a in analyses(results, "codes", [rerun, named, older, current])}
    assert kept == {named["key"], current["key"]}
    assert len(analyses(results, "codes", [])) == 4  # without the records, nothing to check


def test_one_command_regenerates_every_table_from_the_records(tmp_path):
    from ecbench.bench.report.all_tables import write_all

    results = tmp_path / "results"
    (results / "runs").mkdir(parents=True)
    (results / "analysis").mkdir()
    for record in (_record(26.0, 20.0), _student(17.0, 12.0)):
        (results / "runs" / f"{record['key']}.json").write_text(json.dumps(record))
    codes = {"analysis": "codes", "key": "k", "dataset": "tmall",
             "config": _student(1, 1)["config"], "neighbour_share_by_chance": 0.0003,
             "codes": {"M": 4, "K": 32, "items": 10, "occupancy": 0.01, "usage_min": 1,
                       "usage_max": 9, "one_codeword_neighbours_mean": 2.0,
                       "items_with_a_neighbour": 50.0, "codeword_usage": [[1] * 32] * 4},
             "crowding": {g: {"missed_cases": 3, "neighbour_share_of_top": 0.02}
                          for g in ("repeat", "new")}}
    (results / "analysis" / "codes-k.json").write_text(json.dumps(codes))
    written = {p.name: p.read_bytes() for p in write_all(results)}
    written.update({name: text.decode() for name, text in written.items() if name.endswith(".md")})
    assert {"runs.md", "summary.md", "table3.md", "table4.md", "ablation.md", "protocol.md",
            "cases.md", "codes.md"} <= set(written)
    assert "26.00 (27.86)" in written["table3.md"]
    assert "the paper's range: 1090-1480" in written["codes.md"]
    assert all(p.parent == results / "tables" for p in (results / "tables").iterdir())
    # the figures, from the same records: Fig. 3's bars, Fig. 4's points, Fig. 6's cells
    stems = ("fig3-tmall", "fig4-tmall-hr10", "fig4-tmall-ndcg10", "fig6-tmall-k")
    assert {p.name for p in (results / "figures").iterdir()} == {
        f"{stem}.{fmt}" for stem in stems for fmt in ("svg", "pdf")}
    assert all(written[f"{stem}.pdf"].startswith(b"%PDF-") for stem in stems)
    assert {"Stu-base", "HR@10", "NDCG@10"} <= set(svg_text(written["fig3-tmall.svg"]))
    assert {"M=4", "K", "32"} <= set(svg_text(written["fig4-tmall-hr10.svg"]))
    assert {f"codebook {i}" for i in range(1, 5)} <= set(svg_text(written["fig6-tmall-k.svg"]))
