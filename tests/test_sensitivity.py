"""The hyperparameter analysis (Section 6.6, Fig. 5) from records: curves of one weight, the
other weights at the dataset's defaults, seeds averaged, never a mix of settings."""

from __future__ import annotations

from chart_marks import error_bars, points
from helpers import run_cli
from paper_records import KD, record, student

from ecbench.bench.report.sensitivity import (curve_label, curve_of, sensitivity_curves,
                                              sensitivity_figures, sensitivity_table)
from ecbench.bench.report.tables import variant

LINEAR = {**KD, "eta_schedule": "linear"}
CURVE = "K=32, M=4, KD eta linear"  # the records name their codes


def _kd(test: float, validation: float, data: str = "tmall", seed: int = 0, **weights) -> dict:
    codes = {"M": 4, "K": 32} if data == "tmall" else {"M": 3, "K": 256}
    return student(test, validation, data=data, seed=seed, compressor_options=codes,
                   distill={**LINEAR, **weights})


def test_a_point_of_a_curve_varies_that_weight_alone():
    default, eta = _kd(18.0, 13.0), _kd(17.0, 12.0, eta=0.5, seed=1)
    assert curve_of(default, "eta") == curve_of(eta, "eta")  # the seed is no setting
    assert curve_label(curve_of(default, "eta")) == CURVE
    assert curve_of(default, "beta") == curve_of(default, "gamma") == curve_of(default, "eta")
    assert curve_of(eta, "beta") is None  # eta is off its default
    assert curve_of(_kd(18.0, 13.0, eta=0.0), "eta") == curve_of(default, "eta")  # w/o-m
    assert curve_of(_kd(18.0, 13.0, eta=0.5, soft=False), "eta") is None  # an ablation
    assert curve_of(student(18.0, 13.0), "eta") is None  # no distillation
    assert curve_of(_kd(18.0, 13.0, eta=0.5) | {"config": {**eta["config"], "l2": 0.0}},
                    "eta") is None  # off the paper's settings


def test_curves_average_seeds_and_keep_other_settings_apart():
    records = [_kd(18.0, 13.0, seed=0), _kd(20.0, 15.0, seed=1), _kd(16.0, 11.0, eta=0.5),
               _kd(10.0, 9.0, eta=0.5, eta_schedule="none"),  # a point with no curve of its own
               _kd(30.0, 20.0, beta=0.5), _kd(31.0, 21.0, gamma=0.9), _kd(32.0, 22.0, gamma=0.5),
               # RetailRocket's default beta is 0.5: there 0.01 is the departure
               _kd(40.0, 30.0, data="retailrocket", beta=0.5, eta=0.7),
               _kd(41.0, 31.0, data="retailrocket", beta=0.01, eta=0.7)]
    curves = sensitivity_curves(records)
    eta = curves["tmall"]["eta"]
    assert list(eta) == [CURVE]
    assert {v: [r["test"]["HR@10"] for r in runs] for v, runs in eta[CURVE].items()} \
        == {0.8: [18.0, 20.0], 0.5: [16.0]}
    assert sorted(curves["tmall"]["gamma"][CURVE]) == [0.3, 0.5, 0.9]
    assert sorted(curves["tmall"]["beta"][CURVE]) == [0.01, 0.5]
    assert sorted(curves["retailrocket"]["beta"]["K=256, M=3, KD eta linear"]) == [0.01, 0.5]
    assert not curves["retailrocket"]["eta"]  # a single value is no curve
    text = sensitivity_table(records)
    rows = [[cell.strip() for cell in line.split("|")[1:-1]] for line in text.splitlines()
            if line.startswith("| tmall")]
    default = next(row for row in rows if row[1] == "eta (default)")
    # value, seeds, mean validation, mean test HR@10 and NDCG@10 (every metric is the same)
    assert default[2:3] + default[4:8] == ["0.8", "2", "14.00", "19.00", "19.00"]
    assert [row[2] for row in rows if row[1].startswith("beta")] == ["0.01", "0.5"]


def test_settings_the_label_does_not_show_still_draw_their_own_curve():
    # the distillation's own epochs are in the label; the patience is not
    records = [_kd(18.0, 13.0), _kd(16.0, 11.0, eta=0.5),
               _kd(17.0, 12.0, epochs=6), _kd(15.0, 10.0, eta=0.5, epochs=6),
               _kd(30.0, 20.0), _kd(29.0, 19.0, eta=0.5)]
    for r in records[4:]:
        r["config"]["patience"] = 5
    curves = sensitivity_curves(records)["tmall"]["eta"]
    assert len(curves) == 3 and CURVE + ", 6 distillation epochs" in curves
    told_apart = [label for label in curves if label.startswith(CURVE + " [")]
    assert len(told_apart) == 2  # same label, different patience: a hash of the settings
    assert sorted(v[0.8][0]["test"]["HR@10"] for v in curves.values()) == [17.0, 18.0, 30.0]


def test_labels_name_a_weight_off_its_default():
    assert variant(_kd(1.0, 1.0, eta=0.5)["config"]) == CURVE + ", kd_eta=0.5"
    assert variant(_kd(1.0, 1.0, beta=0.5)["config"]).endswith("beta=0.5")
    assert variant(_kd(1.0, 1.0, data="retailrocket", beta=0.5, eta=0.7)["config"]) \
        == "K=256, M=3, KD eta linear"  # RetailRocket's defaults


def test_fig5_draws_a_point_per_value_and_no_curve_draws_nothing():
    records = [_kd(18.0, 13.0), _kd(16.0, 11.0, eta=0.5), _kd(12.0, 9.0, eta=0.0)]
    figures = sensitivity_figures(records)
    assert list(figures) == ["fig5-tmall"]
    assert points(figures["fig5-tmall"]) == {
        (metric, eta): value for metric in ("HR@10", "NDCG@10")
        for eta, value in (("0", 12.0), ("0.5", 16.0), ("0.8", 18.0))}
    assert figures["fig5-tmall"].axes[0].get_xlabel() == "eta"
    assert error_bars(figures["fig5-tmall"]) == []  # a seed a point: no spread to draw
    assert sensitivity_figures([_kd(18.0, 13.0), record(26.0, 20.0)]) == {}
    assert "No curve is recorded yet" in sensitivity_table([_kd(18.0, 13.0)])


def test_a_point_of_several_seeds_draws_their_spread_and_each_curve_its_lines():
    records = [_kd(18.0, 13.0, seed=0), _kd(20.0, 15.0, seed=1), _kd(16.0, 11.0, eta=0.5),
               _kd(17.0, 12.0, epochs=6), _kd(15.0, 10.0, eta=0.5, epochs=6)]
    figure = sensitivity_figures(records)["fig5-tmall"]
    longer = f"{CURVE}, 6 distillation epochs"
    assert points(figure) == {
        **{(f"{m} ({CURVE})", eta): v for m in ("HR@10", "NDCG@10")
           for eta, v in (("0.5", 16.0), ("0.8", 19.0))},
        **{(f"{m} ({longer})", eta): v for m in ("HR@10", "NDCG@10")
           for eta, v in (("0.5", 15.0), ("0.8", 17.0))}}
    # the two seeds at eta 0.8 (18 and 20): one error bar a metric, their sample deviation
    assert error_bars(figure) == [("0.8", 19.0, round(2 ** 0.5, 6))] * 2


def test_the_table_command_renders_the_recorded_curves(tmp_path):
    import json

    runs = tmp_path / "results" / "runs"
    runs.mkdir(parents=True)
    for i, r in enumerate([_kd(18.0, 13.0), _kd(16.0, 11.0, eta=0.5)]):
        (runs / f"tmall-sasrec-ccode-{i}.json").write_text(json.dumps(r))
    result = run_cli(["table", "sensitivity", "--results", "results"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "| tmall  | eta" in result.stdout
