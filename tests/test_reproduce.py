"""The reproduce/ scripts end to end on real CIFAR-10 at the smoke preset's toy size.

They share the smoke zoo with the notebook tests (same $CAE_CACHE_DIR in CI). The
numbers mean nothing at this size; the tests check that every script runs and writes
well-formed tables. Table V trains every removal attack (covered, faster, by
tests/test_removal.py) and the detector game several detectors (tests/test_evaluation.py),
so they are left to `reproduce/all.py`.
"""

import csv
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    from cae import data, presets

    try:
        data.locate(presets.get("smoke").dataset)
    except data.DataError as err:
        pytest.skip(f"needs real data: {err}")
    folder = tmp_path_factory.mktemp("results")
    return {**os.environ, "CAE_RESULTS_DIR": str(folder)}, folder / "smoke"


def _run(env, *argv):
    done = subprocess.run([sys.executable, *map(str, argv)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=1200, check=False)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    return done.stdout


def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_tables_and_figures_through_all(results):
    env, folder = results
    _run(env, ROOT / "reproduce" / "all.py", "--preset", "smoke", "-q",
         "--only", "table2", "figure4", "figure6", "table3")
    report = (folder / "RESULTS.md").read_text()
    for stage in ("table2", "figure4", "figure6", "table3"):
        assert f"| {stage} | ok |" in report, report
    methods = [row["method"] for row in _rows(folder / "table2.csv")]
    assert methods == ["C-IGM", "IGM", "PGD", "DeepFool", "CW-L2"]
    for row in _rows(folder / "table2.csv"):
        if row["successful"].startswith("0/"):  # no example to score (CW-L2 on 4 inputs)
            assert row["conferrable"] == "nan"
        else:
            assert 0.0 <= float(row["conferrable"]) <= 1.0
    assert (folder / "figure4.png").stat().st_size > 0 and (folder / "figure6.png").stat().st_size > 0
    groups = {(row["split"], row["role"]) for row in _rows(folder / "table3.csv")}
    assert {("testing", "surrogate"), ("testing", "reference"), ("training", "surrogate")} <= groups


def test_verification_script(results):
    env, folder = results
    out = _run(env, ROOT / "reproduce" / "verification.py", "--preset", "smoke", "-q", "--attacks", "ftll")
    assert "verification_roc.png" in out
    summaries = _rows(folder / "verification_summary.csv")
    assert [row["statistic"] for row in summaries] == ["retention", "lr"]  # smoke calibrates on its testing models
    summary = summaries[0]
    assert all(0.0 <= float(row["AUC"]) <= 1.0 for row in summaries)
    suspects = _rows(folder / "verification.csv")
    assert {row["kind"] for row in suspects} == {"derived", "reference"}
    assert any(row["model"] == "FTLL" for row in suspects)
    # The usable AUC counts the derived models that lost at most 10 points of accuracy.
    usable = [row for row in suspects if row["kind"] == "derived" and float(row["accuracy drop"]) <= 0.10 + 1e-12]
    assert int(summary["usable positives"]) == len(usable)
    assert (folder / "verification_retention.png").stat().st_size > 0
    shifts = _rows(folder / "verification_shifts.csv")
    assert {row["kind"] for row in shifts} >= {"calibration surrogate", "derived", "reference"}
    assert all(row["shift (C-IGM)"] for row in shifts)


def test_preprocessing_script(results):
    env, folder = results
    _run(env, ROOT / "reproduce" / "preprocessing.py", "--preset", "smoke", "-q", "--kinds", "quantize", "noise")
    rows = _rows(folder / "preprocessing.csv")
    assert [(r["transformation"], r["strength"]) for r in rows] == [
        ("none", "–"), *(("quantize", str(b)) for b in (5, 4, 3, 2)), *(("noise", str(s)) for s in (0.02, 0.05, 0.1))]
    assert float(rows[0]["retention"]) == 1.0 and float(rows[0]["Δ accuracy"]) == 0.0
    for row in rows:
        assert 0.0 <= float(row["retention"]) <= 1.0 and 0.0 <= float(row["references' retention (max)"]) <= 1.0
        if row["references flagged"]:  # empty when the smoke references leave no θ
            flagged, total = map(int, row["references flagged"].split("/"))
            assert 0 <= flagged <= total == 1
    assert "input transformations" in (folder / "preprocessing.md").read_text()
