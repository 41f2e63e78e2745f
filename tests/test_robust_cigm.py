"""The robust C-IGM (issue 19): adversarially trained surrogates and references in the
ensemble, beside the paper's members, as a separately named option. Tiny models, toy data."""

import dataclasses

import numpy as np
import pytest

from cae import ensemble, experiments, presets, removal, zoo
from test_experiments import toy_context
from test_removal import record_perturbations

EPS = 0.1


@pytest.fixture(scope="module")
def context(tmp_path_factory):
    yield from toy_context(tmp_path_factory, attack_inputs=8, attack_iterations=10, robust_members=1)


def _every_existing_spec(preset, specs):
    out = list(experiments.all_specs(specs))
    out += experiments.extra_reference_specs(specs, 6)
    for name in removal.REMOVAL_ATTACKS:
        spec = removal.removal_spec(name, specs["source"], preset)
        out += spec if isinstance(spec, list) else [spec]
    return out


@pytest.mark.parametrize("name", ["cpu", "quick"])
def test_robust_specs_are_new_models_of_the_training_recipe(name):
    preset = dataclasses.replace(presets.get(name), robust_members=2)
    specs = experiments.model_specs(preset)
    robust = experiments.robust_member_specs(preset)
    source = specs["source"]
    assert [len(robust[g]) for g in experiments.ROBUST_GROUPS] == [2, 2]
    assert [s.architecture for s in robust["robust_surrogates"]] == list(preset.train_surrogates[:2])
    assert [s.architecture for s in robust["robust_references"]] == list(preset.train_references[:2])
    for spec in robust["robust_surrogates"] + robust["robust_references"]:
        assert spec.data == "D1" and spec.parent == source.key and spec.init == "scratch"
        assert spec.subset == preset.training_subset
        assert spec.option("adversarial_attack") == "pgd" and spec.option("adversarial_eps") == 0.03
        assert spec.option("adversarial_fraction") == 0.5
        assert (spec.option("subset_seed") is not None) == bool(preset.training_subset)
        assert "fit" in zoo.TRAINING_HOOKS[spec.labels]  # adversarial halves while it trains
    assert {s.labels for s in robust["robust_surrogates"]} == {"adversarial_extraction"}
    assert {s.labels for s in robust["robust_references"]} == {"adversarial_ground_truth"}
    assert {s.role for s in robust["robust_surrogates"]} == {"surrogate"}
    assert {s.role for s in robust["robust_references"]} == {"reference"}
    existing = _every_existing_spec(preset, specs)
    new = robust["robust_surrogates"] + robust["robust_references"]
    assert len({s.key for s in new}) == len(new)
    assert not {s.key for s in new} & {s.key for s in existing}
    assert not {s.seed for s in new} & {s.seed for s in existing}  # a seed range of their own
    # The paper's zoo is untouched by the option.
    assert [s.key for s in experiments.all_specs(experiments.model_specs(presets.get(name)))] == \
        [s.key for s in experiments.all_specs(specs)]


def test_pgd_members_take_adv_extracts_steps_and_none_by_default():
    cpu = presets.get("cpu")
    assert presets.Preset.robust_members == 0 and presets.get("quick").robust_members == 0
    assert cpu.robust_attack == "pgd"
    pgd = experiments.robust_member_specs(cpu)
    fgm = experiments.robust_member_specs(dataclasses.replace(cpu, robust_attack="fgm"))
    for spec in pgd["robust_surrogates"]:
        assert (spec.option("adversarial_eps_step"), spec.option("adversarial_max_iter")) == (0.01, 10)
    assert fgm["robust_surrogates"][0].option("adversarial_max_iter") is None
    assert {s.key for s in pgd["robust_surrogates"]}.isdisjoint(s.key for s in fgm["robust_surrogates"])
    assert experiments.robust_member_specs(presets.get("quick")) == {"robust_surrogates": [],
                                                                     "robust_references": []}


def test_members_are_trained_adversarially_through_the_zoo_and_cached(context, monkeypatch):
    calls = record_perturbations(monkeypatch)
    specs = experiments.robust_member_specs(context.preset, context.specs["source"])
    surrogates, references = experiments.robust_models(context)
    assert len(surrogates) == len(references) == 1
    batches = int(np.ceil(context.preset.defender_size / context.preset.batch_size))
    assert len(calls) == 2 * batches * context.preset.surrogate_epochs  # every batch of both models
    source = context.models["source"]
    for i, (clean, labels, adversarial) in enumerate(calls):
        assert len(clean) == context.preset.batch_size // 2  # half of each batch
        distance = np.abs(adversarial - clean).reshape(len(clean), -1).max(axis=1)
        assert np.all(distance <= 0.03 + 1e-6)
        # A fresh model's gradient moves every image (FGM stops moving those a model
        # answers with a saturated softmax, whose float32 gradient is zero).
        assert np.all(distance > 0) or i not in (0, len(calls) // 2)
        if i < len(calls) // 2:  # the surrogate (trained first): the source's hard labels
            np.testing.assert_array_equal(labels, zoo.predict(source, clean).argmax(axis=1))
        else:  # the reference: the ground truth, here the brighter channel of the image
            np.testing.assert_array_equal(labels, clean.mean(axis=(1, 2)).argmax(axis=1))
    for group in experiments.ROBUST_GROUPS:
        for spec in specs[group]:
            assert context.store.complete(spec)
            assert context.store.metrics(spec)["role"] in ("surrogate", "reference")
    calls.clear()
    again = experiments.robust_models(context)
    assert not calls  # loaded, not trained
    probe = np.random.default_rng(0).random((4, 32, 32, 3), dtype=np.float32)
    np.testing.assert_array_equal(again[0][0].predict(probe, verbose=0), surrogates[0].predict(probe, verbose=0))


def test_the_robust_ensemble_holds_the_extra_members_in_their_roles(context):
    paper = experiments.cigm_ensemble(context)
    robust = experiments.cigm_ensemble(context, members="robust")
    n = context.preset.robust_members
    assert ensemble.roles(paper) == {"source": 1, "surrogate": 1, "reference": 1}
    assert ensemble.roles(robust) == {"source": 1, "surrogate": 1 + n, "reference": 1 + n}
    assert ensemble.roles(experiments.cigm_ensemble(context, members="paper")) == ensemble.roles(paper)


def test_the_robust_run_has_its_own_cache_and_the_papers_keeps_its_key(context):
    preset = context.preset
    # The key and path the paper's C-IGM had before the option existed.
    old_key = context.key("cigm", "most_conferrable", preset.dropout, preset.attack_iterations, EPS, None)
    paper = experiments.run_attack(context, "cigm", EPS)
    folder = context.folder()
    assert (folder / f"cigm-{old_key}.npz").exists()
    assert sorted(p.name for p in folder.glob("cigm-*.npz")) == [f"cigm-{old_key}.npz"]
    assert set(paper) >= {"x_adv", "target", *experiments.GROUPS}
    assert not set(experiments.ROBUST_GROUPS) & set(paper)

    robust = experiments.run_attack(context, "cigm", EPS, members="robust")
    files = sorted(p.name for p in folder.glob("cigm-*.npz"))
    assert len(files) == 2 and f"cigm-{old_key}.npz" in files
    assert [f for f in files if f.startswith("cigm-robust-")]
    assert np.abs(robust["x_adv"] - context.x).max() <= EPS + 1e-6
    for group in experiments.ROBUST_GROUPS:
        assert robust[group].shape == (preset.robust_members, len(context.x))
    again = experiments.run_attack(context, "cigm", EPS, members="robust")
    np.testing.assert_array_equal(again["x_adv"], robust["x_adv"])
    assert len(list(folder.glob("cigm-*.npz"))) == 2
    # The paper's run is the one named members="paper".
    np.testing.assert_array_equal(experiments.run_attack(context, "cigm", EPS, members="paper")["x_adv"],
                                  paper["x_adv"])


@pytest.mark.parametrize("change, call, message", [
    ({}, lambda c: experiments.run_attack(c, "cigm", EPS, members="adversarial"), "members='adversarial'"),
    ({}, lambda c: experiments.cigm_ensemble(c, members=None), "choose one of 'paper', 'robust'"),
    ({}, lambda c: experiments.run_attack(c, "igm", EPS, members="robust"), "use members='paper'"),
    ({"robust_members": 0}, lambda c: experiments.run_attack(c, "cigm", EPS, members="robust"),
     "robust_members=0; use dataclasses.replace"),
    ({"robust_members": 0}, lambda c: experiments.cigm_ensemble(c, members="robust"), "robust_members=2"),
    ({"robust_members": -1}, lambda c: experiments.robust_member_specs(c.preset), "robust_members=-1"),
    ({"robust_members": True}, lambda c: experiments.robust_member_specs(c.preset), "0 or more"),
    ({"robust_attack": "cw"}, lambda c: experiments.robust_member_specs(c.preset), "choose one of fgm, pgd, igm"),
])
def test_bad_values_are_refused_with_the_fix(context, change, call, message):
    changed = dataclasses.replace(context, preset=dataclasses.replace(context.preset, **change))
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(".", r"\.")):
        call(changed)


# --------------------------------------------------------------------------- snapshot members
def test_snapshot_members_are_the_training_models_earlier_selves(context):
    """members="snapshots": each training model retrained under its own key with option
    snapshots, so that the zoo keeps the model after those epochs; the ensemble holds the
    final models and their earlier selves, and the run is cached under its own name."""
    changed = dataclasses.replace(context, preset=dataclasses.replace(context.preset, snapshot_epochs=(1,)))
    specs = experiments.snapshot_specs(changed.preset)
    plain = experiments.model_specs(changed.preset)
    for group in ("train_surrogates", "train_references"):
        for spec, original in zip(specs[group], plain[group]):
            assert spec.option("snapshots") == (1,) and spec.key != original.key
            assert spec.replace(options=original.options) == original
    surrogates, references = experiments.snapshot_models(changed)
    assert len(surrogates) == len(references) == 2  # one model and one snapshot each
    assert any(not np.array_equal(a, b) for a, b in zip(surrogates[0].get_weights(), surrogates[1].get_weights()))
    assert ensemble.roles(experiments.cigm_ensemble(changed, members="snapshots")) == \
        {"source": 1, "surrogate": 2, "reference": 2}
    result = experiments.run_attack(changed, "cigm", EPS, members="snapshots")
    assert np.abs(result["x_adv"] - context.x).max() <= EPS + 1e-6
    assert [p.name for p in context.folder().glob("cigm-snapshots-*.npz")]
    with pytest.raises(ValueError, match="no snapshot_epochs"):
        experiments.cigm_ensemble(context, members="snapshots")


@pytest.mark.parametrize("snapshots", [(2,), (0,), "1", (True,)])
def test_snapshot_epochs_must_precede_the_last(snapshots):
    spec = zoo.TrainSpec(architecture="cnn", dataset="synthetic", split=(8, 8, 0), epochs=2)
    with pytest.raises(ValueError, match="snapshots"):
        spec.replace(options=(("snapshots", snapshots),))
