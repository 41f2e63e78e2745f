"""The scripts in benchmarks/ run and print well-formed measurements.

They measure, they do not assert: these tests run each one at toy size (untrained
models, or the ``smoke`` preset's zoo on real CIFAR-10) and check the numbers they print
are numbers of the right kind, so that a script cannot rot unnoticed. The sizes are far
too small for the numbers to mean anything.
"""

import dataclasses
import importlib.util
import pathlib
import re

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _load(name):
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _needs_real_data(preset="smoke"):
    from cae import data, presets

    try:
        data.locate(presets.get(preset).dataset)
    except data.DataError as err:
        pytest.skip(f"needs real data: {err}")


def _table_rows(text):
    """Rows of the Markdown table in ``text`` as lists of cells (header and rule dropped)."""
    rows = [line.strip().strip("|").split("|") for line in text.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in row] for row in rows[2:]]


def _fractions(cell):
    return [float(value) for value in re.findall(r"\d+\.\d+", cell)]


def test_cigm_speed_paths_agree_without_dropout(capsys):
    results = _load("cigm_speed").main(["--members", "3", "--inputs", "4", "--iterations", "2",
                                        "--batch-size", "4", "--repeats", "1"])
    out = capsys.readouterr().out
    assert set(results) == {(0.5, "compiled"), (0.5, "art"), (0.0, "compiled"), (0.0, "art")}
    assert all(seconds > 0 for seconds in results.values())
    # Without dropout the two execution paths must return the same examples.
    line = next(line for line in out.splitlines() if line.startswith("dropout 0.00  speed-up"))
    assert float(line.rsplit("=", 1)[1]) < 1e-4, line


def test_xla_benchmark_times_both_settings(capsys):
    rows = _load("xla").main(["--architectures", "allconv", "--images", "256"])
    assert [r["architecture"] for r in rows] == ["allconv"]
    assert rows[0]["off"] > 0 and rows[0]["on"] > 0
    assert "| allconv |" in capsys.readouterr().out


def test_xla_benchmark_refuses_an_unknown_architecture():
    with pytest.raises(SystemExit, match="unknown"):
        _load("xla").main(["--architectures", "allconv,lenet"])


def test_cigm_speed_refuses_a_one_model_ensemble():
    with pytest.raises(SystemExit, match="at least 2"):
        _load("cigm_speed").main(["--members", "1"])


@pytest.mark.realdata
def test_ensemble_size_on_smoke(capsys):
    _needs_real_data()
    _load("ensemble_size").main(["--preset", "smoke", "--sizes", "1", "--eps", "0.25"])
    rows = _table_rows(capsys.readouterr().out)
    assert len(rows) == 1
    size, eps, _, _, kept, confer, surrogates, references = rows[0]
    assert (size, eps) == ("1", "0.25") and 0 <= int(kept) <= 16
    assert 0.0 <= float(confer) <= 1.0
    for cell in (surrogates, references):
        assert cell == "-" or all(0.0 <= r <= 1.0 for r in _fractions(cell))


@pytest.mark.realdata
def test_suspect_epochs_on_smoke(capsys):
    _needs_real_data()
    from cae import presets

    epochs = presets.get("smoke").surrogate_epochs  # the smoke zoo's own testing models
    _load("suspect_epochs").main(["--preset", "smoke", "--epochs", str(epochs), "--extra-references", "1",
                                  "--removal", "retraining,ensemble", "--behind"])
    out = capsys.readouterr().out
    main, _, behind = out.partition("\nBehind each affordable transformation")
    rows = _table_rows(main)
    assert [row[0] for row in rows] == ["surrogate (cnn)", "reference (cnn)",
                                        "extra reference 0 (cnn, adam, flip)", "retraining", "ensemble"]
    for row in rows:
        assert row[1] == str(epochs) and float(row[-1]) > 0  # every model's training seconds, members summed
        assert all(0.0 <= float(cell) <= 1.0 for cell in row[2:6])  # accuracy, fidelity, mistakes, retention
        assert re.fullmatch(r"[+-]\d+\.\d\d", row[6])  # shift on the C-IGM keys (log-odds)
        for cell in row[7:9]:  # cae verify's verdict (p-value), both statistics
            verdict, p_value = re.fullmatch(r"(surrogate|independent|inconclusive) \((.+)\)", cell).groups()
            assert 0.0 <= float(p_value) <= 1.0
    # The summary counts as many derived and independent models as the table judged.
    summary = re.search(r"retention: (\d+)/(\d+) derived within 10 points flagged, (\d+)/(\d+) independent", out)
    flagged, derived, accused, independent = map(int, summary.groups())
    assert independent == 2 and derived <= 3 and flagged <= derived and accused <= independent
    auc = re.search(r"retention: [^;]*, AUC (\d\.\d+)", out)
    assert (auc is not None) == (derived > 0) and (auc is None or 0.0 <= float(auc.group(1)) <= 1.0)
    # Behind every affordable transformation: one summary each, and a p-value pair per suspect and condition.
    conditions = re.findall(r"^- behind ([^:]+):", out, flags=re.MULTILINE)
    transformed = _table_rows(behind)
    assert conditions and [row[0] for row in transformed] == [row[0] for row in rows]
    for row in transformed:
        assert len(row) == 1 + len(conditions)
        for cell in row[1:]:
            assert all(0.0 <= float(p.strip("* ")) <= 1.0 for p in cell.split(" / "))


@pytest.mark.parametrize("argv, message", [(["--epochs", "10,x"], "positive numbers of epochs"),
                                           (["--epochs", "0"], "positive numbers of epochs"),
                                           (["--kinds", "stolen"], "derived, independent or both"),
                                           (["--removal", "retraining,ftll"], "ftll: these fine-tune the source"),
                                           (["--removal", "theft"], "--removal 'theft': give a comma-separated")])
def test_suspect_epochs_refuses_bad_arguments_before_any_work(argv, message):
    with pytest.raises(SystemExit, match=message):
        _load("suspect_epochs").main(["--preset", "smoke", *argv])


def test_target_rule_folds_hold_out_one_training_pair():
    from cae import experiments, presets

    script = _load("target_rule")
    names = {"train_surrogates": ["s0", "s1", "s2"], "train_references": ["r0", "r1", "r2"],
             "test_surrogates": ["ts"], "test_references": ["tr"]}
    context = experiments.Context(presets.get("quick"), None, {"source": "m", **names},
                                  {"source": "m", **names}, None, np.arange(3))
    fold = script.fold_context(context, 1)
    for table in (fold.models, fold.specs):
        assert table["train_surrogates"] == ["s0", "s2"] and table["train_references"] == ["r0", "r2"]
        assert table["test_surrogates"] == ["s1"] and table["test_references"] == ["r1"]
    assert context.models["train_surrogates"] == ["s0", "s1", "s2"]  # the original is left alone
    with pytest.raises(SystemExit, match="at least 2 training"):
        script.main(["--preset", "smoke"])  # one pair: nothing to hold out


@pytest.mark.realdata
def test_separation_on_smoke(capsys):
    _needs_real_data()
    rows = _load("separation").main(["--preset", "smoke", "--select", "train", "--transforms", "none,shift+flip",
                                     "--extra-references", "1", "--removal", "ftll"])
    out = capsys.readouterr().out
    assert [(r["transform"], r["select"]) for r in rows] == [("none", "train"), ("shift+flip", "train")]
    for row in rows:
        assert 0 <= row["kept"] <= 16 and 0.0 <= row["confer test"] <= 1.0
        if row["kept"]:
            assert 0.0 <= row["AUC retention"] <= 1.0 and row["AUC LR"] is None  # smoke has no validation models
            assert row["gap"] == pytest.approx(row["min derived"] - row["max independent"])
    assert "derived 2 (" in out and "independent 2" in out  # testing surrogate + FTLL; reference + extra
    with pytest.raises(SystemExit, match="no validation models"):
        _load("separation").main(["--preset", "smoke", "--select", "valid"])


def test_separation_takes_a_prefix_of_the_validation_models():
    from cae import experiments, presets

    script = _load("separation")
    cpu = experiments.model_specs(presets.get("cpu"))
    for n in (0, 2, 6):
        fewer = experiments.model_specs(script.preset_of(script._parse(["--preset", "cpu", "--validation-models",
                                                                        str(n)])))
        for group in ("valid_surrogates", "valid_references"):
            assert [s.key for s in fewer[group]] == [s.key for s in cpu[group][:n]]
        assert [s.key for s in fewer["test_surrogates"]] == [s.key for s in cpu["test_surrogates"]]
    assert script.preset_of(script._parse(["--preset", "cpu"])) == presets.get("cpu")
    with pytest.raises(SystemExit):
        script._parse(["--validation-models", "-1"])
    longer = script.preset_of(script._parse(["--preset", "cpu", "--architecture-epochs", "allconv:20,rescnn:12"]))
    assert longer.architecture_epochs == (("allconv", 20), ("rescnn", 12))
    for bad in ("allconv", "allconv:0", "lenet:20", "allconv:x"):
        with pytest.raises(SystemExit, match="ARCHITECTURE:EPOCHS"):
            script._parse(["--architecture-epochs", bad])


@pytest.mark.realdata
def test_separation_compares_step_schedules_under_its_own_name(tmp_path, monkeypatch):
    _needs_real_data()
    from cae import experiments, presets

    monkeypatch.setenv("CAE_RESULTS_DIR", str(tmp_path))
    rows = _load("separation").main(["--preset", "smoke", "--select", "train", "--transforms", "none",
                                     "--iterations", "2,4", "--steps", "0.05,0.01", "--smooth", "0,1.5",
                                     "--name", "separation_steps"])
    assert [(r["iterations"], r["step"], r["smooth"]) for r in rows] == [(2, 0.05, 0), (2, 0.05, 1.5), (4, 0.01, 0),
                                                                         (4, 0.01, 1.5)]
    assert (tmp_path / "smoke" / "separation_steps.md").is_file()
    assert not (tmp_path / "smoke" / "separation.md").exists()
    # Each schedule is its own attack run (cached by the benchmark): two steps of 0.05 move
    # no pixel more than 0.1, four of 0.01 no more than 0.04.
    smoke = presets.get("smoke")
    context = experiments.prepare(smoke, verbose=False)
    for iterations, step in ((2, 0.05), (4, 0.01)):
        run = dataclasses.replace(context, preset=dataclasses.replace(smoke, attack_iterations=iterations))
        x_adv = experiments.run_attack(run, "cigm", smoke.epsilon, eps_step=step)["x_adv"]
        assert 0 < np.abs(x_adv - context.x).max() <= iterations * step + 1e-6
        blurred = experiments.run_attack(run, "cigm", smoke.epsilon, eps_step=step, smooth=1.5)["x_adv"]
        assert not np.array_equal(blurred, x_adv)  # its own run, under its own key
    with pytest.raises(ValueError, match="only C-IGM takes them"):
        experiments.run_attack(context, "igm", smoke.epsilon, smooth=1.0)


@pytest.mark.parametrize("argv, message", [(["--iterations", "0"], "positive ints"),
                                           (["--iterations", "x"], "positive ints"),
                                           (["--iterations", "10", "--steps", "2"], "step sizes in"),
                                           (["--iterations", "10,20", "--steps", "0.01"], "give one each"),
                                           (["--smooth", "5"], "0 to 4"),
                                           (["--smooth", "x"], "0 to 4"),
                                           (["--name", "../x"], None)])
def test_separation_refuses_bad_arguments_before_any_work(argv, message):
    with pytest.raises(SystemExit, match=message):
        _load("separation").main(["--preset", "smoke", *argv])


@pytest.mark.realdata
def test_agreement_on_smoke(capsys):
    _needs_real_data()
    rows, summary = _load("agreement").main(["--preset", "smoke", "--extra-references", "1", "--removal", "ftll",
                                             "--images", "300"])
    groups = [r["group"] for r in rows]
    assert groups.count("extra_references") == 1 and groups.count("removal") == 1
    assert {s["group"] for s in summary} == set(groups)
    for row in rows:
        assert 0.0 <= row["agreement"] <= 1.0 and 0.0 <= row["test accuracy"] <= 1.0
    ftll = next(r for r in rows if r["group"] == "removal")
    assert ftll["agreement"] > 0.5  # fine-tuning the last layer keeps most of the source's answers
    assert "Agreement with the source" not in capsys.readouterr().err


def test_recipe_names_become_zoo_options():
    recipe = _load("recipe")
    assert recipe.recipe_changes("default", 10) == ({}, {})
    assert recipe.recipe_changes("onecycle+ema+long", 10) == ({"schedule": "onecycle", "ema": 0.99}, {"epochs": 20})
    with pytest.raises(SystemExit, match="unknown recipe part 'fast'"):
        recipe.recipe_changes("onecycle+fast", 10)


@pytest.mark.realdata
def test_recipe_on_smoke(capsys):
    _needs_real_data()
    rows = _load("recipe").main(["--preset", "smoke", "--recipes", "default,onecycle", "--architectures", "cnn",
                                  "--images", "1000"])
    assert [(r["recipe"], r["test-time flips"]) for r in rows] == [("default", "no"), ("default", "yes"),
                                                                  ("onecycle", "no"), ("onecycle", "yes")]
    for row in rows:
        for what in ("surrogate", "reference"):
            assert 0.0 <= row[f"{what} agreement"] <= 1.0 and 0.0 <= row[f"{what} on mistakes"] <= 1.0
        assert row["gap"] == pytest.approx(row["surrogate agreement"] - row["reference agreement"])
    assert rows[0]["source accuracy"] != rows[2]["source accuracy"]  # another recipe trains another source
    assert "# 1000 test images;" in capsys.readouterr().out


def test_mistakes_count_is_the_fewest_within_one_standard_error_of_the_best_validation_gap():
    choose = _load("mistakes").choose
    rows = [{"mistakes": 0, "keys": 188, "valid gap": -0.09}, {"mistakes": 1000, "keys": 1188, "valid gap": 0.034},
            {"mistakes": 2000, "keys": 2188, "valid gap": 0.037}]
    best, top, error = choose(rows)
    assert top["mistakes"] == 2000 and error == pytest.approx((0.5 / 2188) ** 0.5)
    assert best["mistakes"] == 1000  # 0.034 is within 0.015 of 0.037
    rows[1]["valid gap"] = 0.01
    assert choose(rows)[0]["mistakes"] == 2000
    # Two stability rules at the same count: the larger gap breaks the tie.
    rows = [{"mistakes": 1000, "keys": 1188, "valid gap": 0.034, "stable behind": "none"},
            {"mistakes": 1000, "keys": 1188, "valid gap": 0.044, "stable behind": "flip 1"},
            {"mistakes": 300, "keys": 488, "valid gap": 0.01, "stable behind": "flip 1"}]
    assert choose(rows)[0]["stable behind"] == "flip 1"


@pytest.mark.realdata
def test_mistakes_refuses_a_preset_without_validation_models():
    _needs_real_data()
    with pytest.raises(SystemExit, match="no validation models"):
        _load("mistakes").main(["--preset", "smoke", "--counts", "0,10"])
    with pytest.raises(SystemExit):
        _load("mistakes").main(["--counts", "a,b"])


@pytest.mark.realdata
def test_calibration_size_on_smoke(capsys):
    _needs_real_data()
    _load("calibration_size").main(["--preset", "smoke", "--sizes", "2,3", "--attacks", "ftll,retraining"])
    out = capsys.readouterr().out
    summary, _, per_suspect = out.partition("\nEvery suspect's p-value")
    rows = _table_rows(summary)
    assert [(row[0], row[1]) for row in rows] == [("2", "retention"), ("2", "lr"), ("3", "retention"), ("3", "lr")]
    for row in rows:
        flagged, derived = map(int, row[3].split("/"))
        accused, independent = map(int, row[4].split("/"))
        assert derived <= 3 and flagged <= derived and independent == 1 and accused <= independent
        for cell, count in zip(row[5:7], (int(row[0]),) * 2):  # the self-check judges every calibration model
            judged, total, smallest = re.fullmatch(r"(\d+)/(\d+) \((.+)\)", cell).groups()
            assert int(total) == count and 0.0 <= float(smallest) <= 1.0
    suspects = _table_rows(per_suspect)
    assert [row[0] for row in suspects] == ["testing surrogate 0 (cnn)", "FTLL", "Retraining",
                                            "testing reference 0 (cnn)"]
    for row in suspects:
        for cell in row[2:]:
            assert all(0.0 <= float(p.strip("* ")) <= 1.0 for p in cell.split(" / "))


@pytest.mark.parametrize("argv, message", [(["--sizes", "1,3"], "sizes of 2 or more"),
                                           (["--sizes", "x"], "sizes of 2 or more"),
                                           (["--attacks", "theft"], "--attacks 'theft': give a comma-separated")])
def test_calibration_size_refuses_bad_arguments_before_any_work(argv, message):
    with pytest.raises(SystemExit, match=message):
        _load("calibration_size").main(["--preset", "smoke", *argv])
