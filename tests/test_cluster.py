"""Training the zoo on Ray (cae.cluster) and the cost plan (cae.plan).

The Ray tests start a local Ray with 2 CPUs on loopback addresses only and train toy
zoos on in-memory data: the weights equal those of a serial run (with TensorFlow's
threads set as a task's are), parents finish before their children start, and a model
whose Ray run was killed mid-training is completed by a rerun from its checkpoint.
"""

import dataclasses
import json
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from cae import cli, cluster, experiments, models, plan, presets, zoo
from test_zoo import synthetic, tiny_spec

needs_ray = pytest.mark.skipif(not cluster.ray_available(),
                               reason='ray is not installed (pip install -e ".[cluster]" or ".[test]")')
DATASETS = {"synthetic": synthetic(colour=True)}


def tiny_zoo():
    """A source, two surrogates, a fine-tuned copy and a reference; a child comes first."""
    source = tiny_spec(epochs=2)
    return [
        tiny_spec(labels="distill", parent=source.key, role="surrogate", data="D2", seed=7),
        source,
        tiny_spec(labels="distill", parent=source.key, role="surrogate", data="D1", seed=8, subset=64),
        tiny_spec(init="parent", parent=source.key, labels="source_labels", role="ftal", data="D2", subset=64,
                  epochs=1, learning_rate=1e-4),
        tiny_spec(role="reference", data="D2", seed=9),
    ]


# Long enough (40 short epochs) to be killed after its second epoch.
KILLED = tiny_spec(epochs=40, seed=3, augment="flip")

_SERIAL = textwrap.dedent(
    """
    import json, sys
    sys.path.insert(0, {tests!r})
    from test_cluster import DATASETS, KILLED, tiny_zoo
    from cae import cluster, models, zoo

    zoo.set_threads_from_env()  # CAE_THREADS=1, as a task with one CPU has
    store = zoo.Zoo({root!r}, datasets=DATASETS)
    hashes = {{spec.key: models.weights_sha256(store.get(spec, verbose=False))
               for spec in cluster.ordered(tiny_zoo() + [KILLED])}}
    print(json.dumps(hashes))
    """
)

_KILLED_RUN = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {tests!r})
    from test_cluster import DATASETS, KILLED
    from cae import cluster, zoo

    cluster.connect(num_cpus=1)
    cluster.train([KILLED], store=zoo.Zoo({root!r}, datasets=DATASETS), retries=0, verbose=False)
    """
)


def _script(tmp_path, name, template, root):
    path = tmp_path / f"{name}.py"
    path.write_text(template.format(tests=os.path.dirname(__file__), root=str(root)))
    return path


@pytest.fixture(scope="module")
def serial_zoo(tmp_path_factory):
    """Every test model trained serially in a fresh process, one thread: the zoo's folder
    and the models' weight hashes."""
    tmp_path = tmp_path_factory.mktemp("serial")
    script = _script(tmp_path, "serial", _SERIAL, tmp_path / "zoo")
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600,
                            env={**os.environ, "CAE_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    return tmp_path / "zoo", json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def serial_hashes(serial_zoo):
    return serial_zoo[1]


@pytest.fixture(scope="module")
def local_ray():
    context = cluster.connect(num_cpus=2)
    yield context
    import ray

    ray.shutdown()


@pytest.fixture(scope="module")
def ray_zoo(tmp_path_factory, local_ray):
    """The toy zoo trained on the local Ray, one CPU a model: its store and the results."""
    store = zoo.Zoo(tmp_path_factory.mktemp("ray") / "zoo", datasets=DATASETS)
    return store, cluster.train(tiny_zoo(), store=store, cpus_per_task=1, verbose=False)


def _session_members(session):
    """Live processes of the session ``session`` (a process this test started with
    start_new_session=True, so its id is the session's)."""
    members = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as handle:
                    fields = handle.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == session and fields[0] != "Z":
                members.append(int(name))
    return members


def _kill_session(process):
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    deadline = time.time() + 60
    while _session_members(process.pid) and time.time() < deadline:
        for pid in _session_members(process.pid):  # Ray's workers, in their own process groups
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.5)
    assert not _session_members(process.pid)


# --------------------------------------------------------------------------- order
def test_ordered_puts_parents_first_and_adds_papernot_rounds():
    specs = tiny_zoo()
    order = [spec.key for spec in cluster.ordered(specs + specs[:2])]
    assert sorted(order) == sorted(spec.key for spec in specs)  # each once
    assert order.index(specs[1].key) < min(order.index(s.key) for s in specs if s.parent)

    from cae import removal

    preset = presets.get("smoke")
    source = tiny_spec()
    last = removal.removal_spec("papernot", source, preset)
    chain = cluster.ordered([last, source])
    assert [s.option("papernot_rounds") for s in chain if s.labels == "papernot"] == [0, 1, 2, 3]
    assert chain[0] == source
    assert cluster.dependencies(chain[2]) == [source.key, chain[1].key]


def test_removal_specs_follow_their_source():
    preset = presets.get("smoke")
    specs = experiments.preset_specs(preset, removal=True)
    source = specs[0]
    assert source.role == "source"
    roles = {spec.role for spec in specs}
    assert {"retraining", "ftal", "adv_pgd", "papernot", "ensemble"} <= roles
    assert all(spec.parent == source.key for spec in specs if spec.role in ("retraining", "ftal", "ensemble"))
    assert len({spec.key for spec in specs}) == len(specs)
    assert not {"prune50", "transfer", "adv_extract"} & roles  # the paper's attacks by default
    everything = {spec.role for spec in experiments.preset_specs(preset, removal="all")}
    assert {"prune20", "prune50", "prune80", "transfer", "extract_prob", "extract_label", "adv_extract"} <= everything
    chosen = experiments.preset_specs(preset, removal=["prune50", "ftll"])
    assert {spec.role for spec in chosen} - roles == {"prune50"} and "ftal" not in {spec.role for spec in chosen}
    assert experiments.preset_specs(preset, removal="none") == experiments.preset_specs(preset)
    with pytest.raises(ValueError, match="'prune'"):
        experiments.preset_specs(preset, removal="prune")


def test_preset_specs_add_the_verification_reports_extra_references(monkeypatch):
    preset = presets.get("cpu")
    plain = experiments.preset_specs(preset, removal="ftll")
    extra = experiments.extra_reference_specs(experiments.model_specs(preset), 4)
    with_extra = experiments.preset_specs(preset, removal="ftll", extra_references=4)
    assert sorted(s.key for s in with_extra) == sorted([s.key for s in plain] + [s.key for s in extra])
    assert len({s.key for s in with_extra}) == len(with_extra)
    # `cae zoo train --extra-references` alone means the preset's count; a number overrides it.
    seen = []
    monkeypatch.setattr(experiments, "train_preset", lambda preset, **kw: seen.append(kw["extra_references"]))
    monkeypatch.setattr(cli, "_zoo_list", lambda args: 0)
    for argv, expected in (([], 0), (["--extra-references"], preset.extra_references), (["--extra-references", "2"], 2)):
        assert cli.main(["zoo", "train", "--preset", "cpu"] + argv) == 0
        assert seen[-1] == expected
    with pytest.raises(SystemExit, match="0 or more"):
        cli.main(["zoo", "train", "--preset", "cpu", "--extra-references", "-3"])


def test_train_refuses_a_child_without_its_parent(tmp_path):
    orphan = tiny_zoo()[0]
    with pytest.raises(ValueError, match=orphan.parent):
        cluster.train([orphan], store=zoo.Zoo(tmp_path, datasets=DATASETS))
    with pytest.raises(ValueError, match="cpus_per_task"):
        cluster.train([tiny_spec()], store=zoo.Zoo(tmp_path), cpus_per_task=0)
    with pytest.raises(ValueError, match="gpus_per_task"):
        cluster.train([tiny_spec()], store=zoo.Zoo(tmp_path), gpus_per_task=1.5)


# --------------------------------------------------------------------------- Ray
@needs_ray
def test_a_killed_ray_run_is_completed_by_a_rerun(tmp_path, serial_hashes, request):
    root = tmp_path / "zoo"
    script = _script(tmp_path, "killed", _KILLED_RUN, root)
    process = subprocess.Popen([sys.executable, str(script)], start_new_session=True, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    progress = root / KILLED.key / "progress.json"
    deadline = time.time() + 300
    try:
        while not (progress.exists() and json.loads(progress.read_text())["epoch"] >= 2):
            assert process.poll() is None, process.stderr.read().decode()[-3000:]
            assert time.time() < deadline, "the Ray run did not reach its second epoch"
            time.sleep(0.02)
    finally:
        _kill_session(process)  # the driver, its Ray and the worker training the model
    killed_at = json.loads(progress.read_text())["epoch"]
    assert killed_at < KILLED.epochs and not (root / KILLED.key / "metrics.json").exists()

    request.getfixturevalue("local_ray")
    store = zoo.Zoo(root, datasets=DATASETS)
    (result,) = cluster.train([KILLED], store=store, verbose=False)
    assert result["trained"] and result["metrics"]["resumed_from_epoch"] >= killed_at
    assert not list((root / KILLED.key).glob("checkpoint-*.keras"))
    assert models.weights_sha256(store.load(KILLED)) == serial_hashes[KILLED.key]


@needs_ray
def test_ray_trains_the_serial_zoo_in_parallel_parents_first(local_ray, ray_zoo, serial_hashes):
    assert local_ray.startswith("127.0.0.1:"), local_ray  # loopback only

    specs = tiny_zoo()
    store, results = ray_zoo
    by_key = {r["key"]: r for r in results}
    assert [r["key"] for r in results] == [s.key for s in cluster.ordered(specs)]
    for spec in specs:
        result = by_key[spec.key]
        assert result["trained"] and result["threads"] == 1
        assert set(os.listdir(result["folder"])) == {"model.keras", "spec.json", "metrics.json"}
        assert json.loads(json.dumps(result)) == result  # paths and metrics only: plain data
        # The same weights, bit for bit, as the serial run with one thread.
        assert models.weights_sha256(store.load(spec)) == serial_hashes[spec.key], spec.role
        if spec.parent:
            assert result["started"] >= by_key[spec.parent]["finished"]
    children = [by_key[s.key] for s in specs if s.parent]
    assert len({r["pid"] for r in results}) == len(results)  # one fresh worker per model
    assert any(a["started"] < b["finished"] and b["started"] < a["finished"]
               for i, a in enumerate(children) for b in children[i + 1:]), "no two models trained at once"

    again = cluster.train(specs, store=store, verbose=False)
    assert not any(r["trained"] for r in again)
    assert [r["metrics"] for r in again] == [r["metrics"] for r in results]


@needs_ray
def test_cae_ray_sends_the_reproduce_scripts_zoo_to_ray(tmp_path, local_ray, monkeypatch):
    """experiments.train_zoo (every reproduce script's first stage) trains on Ray when
    CAE_RAY is set: nothing is trained in this process."""
    from cae import experiments

    preset = dataclasses.replace(presets.get("smoke"), name="toy", dataset="synthetic", defender_size=128,
                                 adversary_size=128, source_epochs=1, surrogate_epochs=1, reference_epochs=1,
                                 batch_size=32, evaluate_on=64, test_surrogates=(), test_references=())
    store = zoo.Zoo(tmp_path, datasets=DATASETS)
    monkeypatch.setenv(cluster.ENVIRONMENT_VARIABLE, "local")

    def refuse(self, spec, verbose=True):
        raise AssertionError(f"{spec.role} was trained in the driver, not on Ray")

    monkeypatch.setattr(zoo.Zoo, "train", refuse)
    trained, specs, _ = experiments.train_zoo(preset, store=store, verbose=False)
    assert len(trained["train_surrogates"]) == 1 and all(store.complete(s) for s in experiments.all_specs(specs))
    assert len(list(experiments.all_specs(specs))) == 3  # the source, a training surrogate and a training reference


def test_a_serial_train_preset_trains_the_zoo_and_its_extra_references(tmp_path, monkeypatch):
    monkeypatch.delenv(cluster.ENVIRONMENT_VARIABLE, raising=False)
    preset = dataclasses.replace(presets.get("smoke"), name="toy", dataset="synthetic", defender_size=128,
                                 adversary_size=128, source_epochs=1, surrogate_epochs=1, reference_epochs=1,
                                 batch_size=32, evaluate_on=64, test_references=("cnn",), test_surrogates=())
    store = zoo.Zoo(tmp_path, datasets=DATASETS)
    assert experiments.train_preset(preset, store=store, extra_references=1, verbose=False) is None
    specs = experiments.preset_specs(preset, extra_references=1)
    assert len(specs) == 5 and all(store.complete(s) for s in specs)  # source, 2 training, 1 testing, 1 extra


@needs_ray
def test_a_failed_model_fails_its_children_and_the_call(tmp_path, local_ray):
    broken = tiny_spec(dataset="nowhere")  # no such dataset: the worker cannot load it
    child = tiny_spec(dataset="nowhere", labels="distill", parent=broken.key, role="surrogate", seed=7)
    with pytest.raises(RuntimeError, match=r"2 of 2 models failed on Ray .*nowhere"):
        cluster.train([child, broken], store=zoo.Zoo(tmp_path), retries=0, verbose=False)
    assert not zoo.Zoo(tmp_path).complete(broken)


@needs_ray
def test_benchmark_compares_two_zoos(tmp_path, ray_zoo, serial_zoo):
    """benchmarks/cluster.py's check: the Ray zoo's weights equal the serial zoo's, model by
    model, and a model retrained otherwise is named as differing."""
    import importlib.util
    import shutil

    path = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "cluster.py")
    spec = importlib.util.spec_from_file_location("benchmark_cluster", path)
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    specs = tiny_zoo()
    store, serial_root = ray_zoo[0], serial_zoo[0]
    assert benchmark.compare(specs, store.root, serial_root) == {"models": 5, "equal": 5, "differ": []}
    # One model of a copy of the serial zoo replaced by another seed's weights: compare names it.
    other = tmp_path / "other"
    shutil.copytree(serial_root, other)
    source, reference = specs[1], specs[4]
    shutil.copy(pathlib.Path(serial_root) / reference.key / "model.keras", other / source.key / "model.keras")
    assert benchmark.compare(specs, store.root, other) == {"models": 5, "equal": 4, "differ": [source.key]}


# --------------------------------------------------------------------------- plan
MEASURED = {"cnn": {"train_images_per_s": 1000.0, "predict_images_per_s": 4000.0, "save_seconds": 0.1},
            "augment_seconds_per_image": 1e-5}


def test_macs_of_a_known_network():
    import keras

    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(8, 3, padding="same")(inputs)          # 32*32 * 3*3*3*8
    x = keras.layers.DepthwiseConv2D(3, strides=2, padding="same")(x)  # 16*16 * 3*3*8
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(10)(x)                               # 8*10
    assert plan.macs_per_image(keras.Model(inputs, outputs)) == 32 * 32 * 216 + 16 * 16 * 72 + 80
    # He et al.'s CIFAR ResNet-20: 41 M multiply-adds per image (cae.models says so too).
    assert plan.macs_per_image(models.build("resnet20", 10)) == pytest.approx(41e6, rel=0.02)


def test_plan_of_the_smoke_zoo():
    preset = presets.get("smoke")
    result = plan.plan(preset, workers=2, gpu_throughput=1000.0, measured=MEASURED)
    rows = result["models"]
    assert len(rows) == 5 and rows[0].group == "source"
    assert rows[0].parameters == models.build("cnn", 10).count_params()
    source = rows[0]
    # 3 epochs of 2,000 images at 1,000 images/s, checkpoints, augmentation, 1,000 test images.
    assert source.seconds == pytest.approx(3 * 2000 / 1000 + 1000 / 4000 + 3 * (0.1 + 2000 * 1e-5))
    assert source.flops_per_epoch == 6 * source.macs_per_image * 2000
    surrogate = next(r for r in rows if r.role == "surrogate")
    assert surrogate.flops_per_epoch == 8 * source.macs_per_image * 2000  # + the source's answers
    seconds = result["totals"]["seconds"]
    assert seconds[1] == pytest.approx(sum(r.seconds for r in rows))
    # Two workers: the source first, then the four children two at a time.
    children = sorted(r.seconds for r in rows[1:])
    assert seconds[2] == pytest.approx(source.seconds + children[0] + children[2], rel=0.2)
    assert seconds[2] < seconds[1]
    assert result["totals"]["gpu_seconds"][1] > 0
    text = plan.describe(result)
    assert "| source | cnn | 1 |" in text and "2 workers" in text and "GPU at 1,000" in text
    json.dumps(plan.to_json(result))


def test_makespan_waits_for_parents():
    durations = {"a": 10.0, "b": 1.0, "c": 1.0}
    assert plan.makespan(durations, {"b": ("a",), "c": ("a",)}, 2) == 11.0
    assert plan.makespan(durations, {}, 2) == 10.0
    assert plan.makespan(durations, {}, 1) == 12.0


def test_cli_zoo_plan_prints_the_plan(monkeypatch, capsys):
    from cae import cli

    monkeypatch.setattr(plan, "throughput", lambda architectures, batch_size, augment, **kw: {
        **{a: dict(MEASURED["cnn"]) for a in architectures}, "augment_seconds_per_image": 1e-5})
    assert cli.main(["zoo", "plan", "--preset", "smoke", "--workers", "3", "--gpu-throughput", "5000"]) == 0
    out = capsys.readouterr().out
    assert "plan for preset smoke: 5 models" in out and "3 workers" in out and "3 GPUs" in out
    assert cli.main(["zoo", "plan", "--preset", "smoke", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["totals"]["models"] == 5 and "gpu_seconds" not in data["totals"]
    assert cli.main(["zoo", "plan", "--preset", "smoke", "--extra-references", "2"]) == 0
    assert "plan for preset smoke: 7 models" in capsys.readouterr().out


def test_plan_counts_extra_references():
    result = plan.plan(presets.get("smoke"), extra_references=3, measured=MEASURED)
    extra = [r for r in result["models"] if r.group == "extra_references"]
    assert len(result["models"]) == 8 and len(extra) == 3 and {r.role for r in extra} == {"reference"}


def test_plan_counts_removal_models():
    preset = presets.get("smoke")
    result = plan.plan(preset, removal=True, measured=MEASURED)
    papernot = [r for r in result["models"] if r.role == "papernot"]
    assert [r.images_per_epoch for r in papernot] == [250, 500, 1000, 2000]  # |D2| / 2^3, doubled each round
    adversarial = next(r for r in result["models"] if r.role == "adv_fgm")
    assert adversarial.images_per_epoch == preset.finetune_examples + preset.adversarial_examples
    assert np.isfinite(result["totals"]["seconds"][1])
