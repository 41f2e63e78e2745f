"""A verification statistic is one registry entry (cae.fingerprint.STATISTICS): one
registered here, in the test only, flows through verify, the calibration's θ, `cae verify`
and the reports without any other file knowing its name."""

import json

import numpy as np
import pytest

from cae import cli, reports, stats
from cae import fingerprint as F
from helpers import noisy_copy, tiny_model

N = 100
NAME = "agreed"


def _agreed(calibration):
    """The keys the calibration surrogates match more often than its references."""
    return calibration.surrogate_matches.mean(axis=0) > calibration.reference_matches.mean(axis=0)


def _score(calibration, matches):
    keys = _agreed(calibration)
    return float(matches[keys].mean()) if keys.any() else 0.0


def _p_value(calibration, matches, score, rates, spread):
    keys = _agreed(calibration)
    return stats.poisson_binomial_p_value(int(matches[keys].sum()), rates[keys], spread=spread) if keys.any() else 1.0


@pytest.fixture
def agreed():
    """Retention over the agreed keys, registered for one test."""
    before = dict(F.STATISTICS)
    statistic = F.register_statistic(F.Statistic(NAME, "retention on agreed keys", _score, _p_value, label=NAME,
                                                 summary="retention on the keys the calibration surrogates match "
                                                         "more often than its references"))
    yield statistic
    F.unregister_statistic(NAME)
    assert F.STATISTICS == before


@pytest.fixture(scope="module")
def suspects():
    source = tiny_model(seed=0)
    return {"source": source, "surrogate": noisy_copy(source, 0.01, seed=1), "reference": tiny_model(seed=2)}


@pytest.fixture(scope="module")
def fp(suspects):
    independent = tiny_model(seed=20)
    x = np.random.default_rng(0).random((N, 32, 32, 3), dtype=np.float32)
    fp = F.create(suspects["source"], x, attack="test", epsilon=0.1, tau=1.0, dataset="none")
    return fp.with_calibration(F.calibrate(fp, [noisy_copy(suspects["source"], 0.01, seed=10 + i) for i in range(3)],
                                           [noisy_copy(independent, 0.01, seed=20 + i) for i in range(3)],
                                           models="test models"))


def test_verify_and_the_calibration_use_a_registered_statistic(agreed, fp, suspects):
    calibration = fp.calibration
    theta = calibration.threshold(NAME)
    assert theta is not None and theta == calibration.threshold(NAME)  # cached per statistic
    assert theta != calibration.threshold("retention") and theta != calibration.threshold("lr")
    results = {n: F.verify(m, fp, statistic=NAME) for n, m in suspects.items()}
    for name, result in results.items():
        hits = F.predict_labels(suspects[name], fp.x, fp.num_classes)[0] == fp.keys
        assert result.statistic == NAME and result.score == pytest.approx(_score(calibration, hits))
        assert result.threshold == theta and result.threshold_source == "calibration"
        assert result.p_value == calibration.p_value(hits, NAME) and 0 < result.p_value <= 1
    assert results["source"].score == 1.0 and results["source"].verdict == "surrogate"
    assert results["reference"].verdict != "surrogate"
    assert results["reference"].p_value > results["source"].p_value
    # θ for the statistic is stored in the manifest beside the others', for people reading it.
    assert fp.with_calibration(calibration).manifest["calibration"][f"threshold_{NAME}"] == theta
    uncalibrated = F.create(suspects["source"], fp.x, attack="test", epsilon=0.1, tau=1.0, dataset="none")
    with pytest.raises(ValueError, match="retention-on-agreed-keys statistic needs a calibrated fingerprint"):
        F.verify(suspects["source"], uncalibrated, statistic=NAME)


def test_cae_verify_offers_a_registered_statistic(agreed, fp, suspects, tmp_path, capsys):
    F.save(fp, tmp_path / "fp")
    suspects["surrogate"].save(tmp_path / "surrogate.keras")
    argv = ["verify", "--fingerprint", str(tmp_path / "fp"), "--model", str(tmp_path / "surrogate.keras"),
            "--statistic", NAME]
    assert cli.main([*argv, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result == json.loads(json.dumps(F.verify(suspects["surrogate"], fp, statistic=NAME).to_dict()))
    assert cli.main(argv) == 0
    line = capsys.readouterr().out
    assert line.startswith(f"{result['verdict'].upper()}: retention on agreed keys {result['score']:.3f} vs threshold "
                           f"{result['threshold']:.3f} (calibration)"), line
    F.unregister_statistic(NAME)
    try:
        with pytest.raises(SystemExit):  # argparse: not among --statistic's choices any more
            cli.main(argv)
        assert f"invalid choice: '{NAME}'" in capsys.readouterr().err
    finally:
        F.register_statistic(agreed)


def test_reports_give_a_registered_statistic_its_columns(agreed, fp, suspects):
    result = reports.verification_stats(None, fp, {"source": suspects["source"], "surrogate": suspects["surrogate"]},
                                        {"reference": suspects["reference"]})
    assert result["statistics"] == ("retention", "lr", NAME)
    assert {"auc", "auc_lr", "threshold_lr"} <= set(result)  # the existing keys stay as they were
    assert result[f"threshold_{NAME}"] == fp.calibration.threshold(NAME) and result[f"auc_{NAME}"] == 1.0
    assert result[f"derived_flagged_{NAME}"] >= 1 and result[f"references_flagged_{NAME}"] == 0
    for row in result["suspects"]:
        assert {NAME, f"verdict ({NAME})", f"p-value ({NAME})", "LR", "verdict (LR)"} <= set(row)
    assert reports.other_aucs(result) == (f", likelihood ratio {result['auc_lr']:.3f}, "
                                          f"retention on agreed keys {result[f'auc_{NAME}']:.3f}")
    assert reports.separation_columns()[-3:] == [f"AUC ({NAME})", f"derived flagged ({NAME})",
                                                 f"references flagged ({NAME})"]


def test_the_registry_refuses_what_it_cannot_hold(agreed):
    with pytest.raises(ValueError, match="already registered"):
        F.register_statistic(agreed)
    with pytest.raises(ValueError, match="cannot be unregistered"):
        F.unregister_statistic("retention")
    with pytest.raises(ValueError, match="choose one of retention, lr, agreed"):
        F.get_statistic("nope")
    with pytest.raises(ValueError, match="not allowed"):
        F.Statistic("two words", "two words", _score, _p_value)


def test_tables_keep_the_size_of_small_numbers():
    """Markdown tables print three decimals, but a p-value of 6e-14 must not read 0.000."""
    from cae import tables

    row = tables.markdown([{"p": 6e-14, "zero": 0.0, "half": 0.5, "small": -1e-5, "none": None, "nan": float("nan")}])
    assert row.splitlines()[-1] == "| 6e-14 | 0.000 | 0.500 | -1e-05 | – | – |"
