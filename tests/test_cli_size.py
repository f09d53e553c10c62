"""`ecbench size`: what a compressed table would store, without training."""

from __future__ import annotations

from helpers import run_cli


def test_ccode_size_on_tmall_prints_eq11_and_byte_ratios(data_root, tmp_path):
    proc = run_cli(["size", "--data", "tmall", "--data-root", str(data_root), "--compressor",
                    "ccode", "--M", "4", "--K", "32"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "codes      40728x4   uint8     162912" in proc.stdout
    assert "byte ratio 91.28x; paper formula 29.08x; bit-packed 124.60x" in proc.stdout


def test_size_with_a_budget_reports_the_solved_options(data_root, tmp_path):
    proc = run_cli(["size", "--data", "tmall", "--data-root", str(data_root), "--compressor",
                    "sttd", "--ratio", "30"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "STTDConfig(rank=132, stp=4" in proc.stdout
    ratio = float(proc.stdout.split("byte ratio ")[1].split("x")[0])
    assert ratio >= 30
