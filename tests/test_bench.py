"""The speed benchmark runs end to end and reports every workload in both modes (figures are not asserted)."""

import json

from decoding import bench


def test_bench_prints_every_workload_in_both_modes(tmp_path, capsys):
    out = tmp_path / "bench.json"
    args = ["--methods", "vcd,m3id", "--tokens", "3", "--repeats", "1", "--warmup", "0", "--json", str(out)]
    assert bench.main(args) == 0
    table = capsys.readouterr().out
    data = json.loads(out.read_text())
    workloads = {(r["workload"], r["mode"]) for r in data["rows"]}
    assert workloads == {
        ("plain", "batched"),
        ("vcd alone", "batched"), ("vcd alone", "separate"),
        ("baseline + vcd", "batched"), ("baseline + vcd", "separate"),
        ("m3id alone", "batched"), ("m3id alone", "separate"),
        ("baseline + m3id", "batched"), ("baseline + m3id", "separate"),
    }
    rows = {(r["workload"], r["mode"]): r for r in data["rows"]}
    assert rows[("plain", "batched")]["rows"] == 1
    assert rows[("baseline + vcd", "batched")]["rows"] == 3  # baseline, method original, noised
    assert all(r["per_token_s"] > 0 and r["prefill_s"] > 0 for r in data["rows"])
    assert data["floor_s"] > 0
    assert "| baseline + vcd | batched | 3 |" in table


def test_bench_times_opera_alone_with_its_beams_and_candidates(tmp_path, capsys):
    out = tmp_path / "bench.json"
    args = ["--methods", "opera", "--tokens", "3", "--repeats", "1", "--warmup", "0", "--json", str(out)]
    assert bench.main(args) == 0
    rows = {(r["workload"], r["mode"]): r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == {("plain", "batched"), ("opera alone", "batched"), ("opera alone", "separate")}
    assert rows[("opera alone", "batched")]["rows"] == 30  # 5 beams + 5 candidates each
    assert "| opera alone | separate | 30 |" in capsys.readouterr().out
