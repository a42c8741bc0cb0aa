"""benchmarks/device_run.py: the last ×4 reconstruction reading placed against What next 18's
knee."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import device_run


def test_knee_line_reads_the_last_x4_reconstruction():
    assert device_run.knee_line([{"step": 0, "loss": 1.0}]) == []
    log = [
        {"step": 200, "recon_probe": {"gap_k1": 0.9, "gap_k4": 0.30}},
        {"step": 300, "loss": 2.0},
        {"step": 400, "recon_probe": {"error": "out of memory"}},
    ]
    assert "30.0% of the gap, under the knee" in device_run.knee_line(log)[0]
    log.append({"step": 600, "recon_probe": {"gap_k4": 0.52}})
    assert "52.0% of the gap, within the knee" in device_run.knee_line(log)[0]
    log.append({"step": 800, "recon_probe": {"gap_k4": 0.71}})
    assert "71.0% of the gap, over the knee" in device_run.knee_line(log)[0]


def test_probe_rows_give_greedy_in_company_when_logged():
    answer = {"gap_k2": 0.5, "gap_k4": 0.3, "gap_k4_other": 0.1, "greedy_none": 0.05}
    answer |= {"greedy_raw": 0.4, "greedy_k2": 0.2, "greedy_k4": 0.1}
    old = device_run.probe_rows([{"step": 200, "answer_probe": answer}])
    new = device_run.probe_rows(
        [
            {
                "step": 400,
                "answer_probe": answer | {"greedy_k4_company": 0.06, "greedy_raw_company": 0.3},
            }
        ]
    )
    cells = [row.strip("| ").split(" | ") for row in (*old, *new)]
    assert [len(c) for c in cells] == [7, 7]  # the header's seven columns
    assert cells[0][4] == "—" and cells[1][4] == "6% / 30%"
    assert cells[1][2] == "10% / +20.0" and cells[1][3] == "5% / 40% / 20% / 10%"
