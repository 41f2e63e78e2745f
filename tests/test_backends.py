"""The zoo and the compiled C-IGM loop under the JAX backend, without TensorFlow.

GPU machines may carry JAX but not TensorFlow; ``.keras`` files are backend-neutral.
A subprocess with ``KERAS_BACKEND=jax``, in which importing TensorFlow fails, trains a
toy zoo, attacks it and takes Papernot's Jacobian signs; this (TensorFlow) process then
loads its models and checks that both backends compute the same things.
"""

import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from cae import attacks, ensemble, removal, zoo

from test_zoo import synthetic, tiny_spec

pytestmark = pytest.mark.skipif(importlib.util.find_spec("jax") is None,
                                reason="JAX is not installed (pip install -e '.[test]' installs it)")

_UNDER_JAX = """
import sys

class _NoTensorFlow:  # as on a GPU machine that has JAX but not TensorFlow
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "tensorflow":
            raise ImportError("TensorFlow is blocked in this test")

sys.meta_path.insert(0, _NoTensorFlow())
sys.path.insert(0, {tests!r})
import json
import numpy as np
import keras
from cae import attacks, ensemble, removal, zoo
from test_zoo import synthetic, tiny_spec

assert keras.backend.backend() == "jax", keras.backend.backend()
store = zoo.Zoo({root!r}, datasets={{"synthetic": synthetic(colour=True)}})
specs = {specs}
source, surrogate, reference = (store.get(zoo.TrainSpec(**s), verbose=False) for s in specs)
x = np.load({inputs!r})
out = {{"source": source.predict(x, verbose=0),
        "jacobian_sign": removal.jacobian_sign(source, x, np.zeros(len(x), np.int64))}}
off = ensemble.compose(source, [surrogate], [reference], dropout=0.0)
out["cigm_off"] = attacks.CIGM(off, 0.05, eps_step=0.01, max_iter=8, batch_size=3).generate(x)
on = ensemble.compose(source, [surrogate], [reference], dropout=0.5)
runs = [attacks.CIGM(on, 0.05, eps_step=0.01, max_iter=8, batch_size=3, seed=seed).generate(x)
        for seed in (1, 1, 2)]
out.update(cigm_on_1=runs[0], cigm_on_1_again=runs[1], cigm_on_2=runs[2])
try:
    attacks.CIGM(off, 0.05, backend="art")
except ValueError as err:
    out["art_refused"] = np.array(str(err))
np.savez({outputs!r}, **out)
"""


@pytest.fixture(scope="module")
def under_jax(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("jax")
    specs = [tiny_spec(epochs=3),
             tiny_spec(epochs=3, labels="distill", parent=tiny_spec(epochs=3).key, role="surrogate", data="D2",
                       seed=1),
             tiny_spec(epochs=3, role="reference", data="D2", seed=2)]
    x = synthetic(colour=True, seed=5).x_test[:6].astype(np.float32) / 255.0
    np.save(tmp / "x.npy", x)
    script = tmp / "under_jax.py"
    script.write_text(textwrap.dedent(_UNDER_JAX).format(
        tests=os.path.dirname(__file__), root=str(tmp / "zoo"), inputs=str(tmp / "x.npy"),
        outputs=str(tmp / "out.npz"), specs=repr([dataclasses.asdict(s) for s in specs])))
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    with np.load(tmp / "out.npz") as out:
        return {"root": tmp / "zoo", "specs": specs, "x": x, **{k: out[k] for k in out.files}}


def _models(run):
    store = zoo.Zoo(run["root"], datasets={"synthetic": synthetic(colour=True)})
    return store, [store.load(spec) for spec in run["specs"]]


def test_zoo_trains_under_jax_and_tensorflow_loads_the_models(under_jax):
    store, (source, surrogate, _) = _models(under_jax)  # loads with safe_mode=True
    metrics = store.metrics(under_jax["specs"][0])
    assert metrics["backend"] == "jax"
    assert metrics["test_accuracy"] > 0.6  # the toy task is learnt; chance is 1/3
    assert store.metrics(under_jax["specs"][1])["fidelity_test"] > 0.6
    np.testing.assert_allclose(source.predict(under_jax["x"], verbose=0), under_jax["source"], atol=1e-5)


def test_papernot_jacobian_signs_agree_across_backends(under_jax):
    _, (source, _, _) = _models(under_jax)
    signs = removal.jacobian_sign(source, under_jax["x"], np.zeros(len(under_jax["x"]), np.int64))
    assert np.mean(signs == under_jax["jacobian_sign"]) > 0.999
    assert np.mean(signs != 0) > 0.9  # not the trivial all-zero gradient


def test_compiled_cigm_agrees_across_backends_without_dropout(under_jax):
    _, (source, surrogate, reference) = _models(under_jax)
    off = ensemble.compose(source, [surrogate], [reference], dropout=0.0)
    x = under_jax["x"]
    here = attacks.CIGM(off, 0.05, eps_step=0.01, max_iter=8, batch_size=3).generate(x)
    # Gradients differ in their last bits between XLA and TensorFlow; a sign can flip
    # only where a gradient component is almost zero.
    assert np.mean(np.abs(here - under_jax["cigm_off"]) < 1e-5) > 0.99
    assert np.abs(under_jax["cigm_off"] - x).max() <= 0.05 + 1e-6
    assert np.abs(under_jax["cigm_off"] - x).max() > 0.04


def test_dropout_is_active_and_seeded_under_jax(under_jax):
    x = under_jax["x"]
    np.testing.assert_array_equal(under_jax["cigm_on_1"], under_jax["cigm_on_1_again"])
    assert not np.array_equal(under_jax["cigm_on_1"], under_jax["cigm_on_2"])
    assert not np.array_equal(under_jax["cigm_on_1"], under_jax["cigm_off"])
    for key in ("cigm_on_1", "cigm_on_2"):
        assert np.abs(under_jax[key] - x).max() <= 0.05 + 1e-6
        assert 0.0 <= under_jax[key].min() and under_jax[key].max() <= 1.0


def test_art_path_is_refused_under_jax_with_the_fix(under_jax):
    message = str(under_jax["art_refused"])
    assert "TensorFlow" in message and "backend='compiled'" in message and "KERAS_BACKEND" in message
