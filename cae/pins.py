"""The one place where dependency versions are pinned.

``setup.py`` reads this file, ``environment.yml`` repeats it, and
``tests/test_packaging.py`` proves that the two agree.
"""

PYTHON = "3.11"

RUNTIME = {
    "tensorflow-cpu": "2.21.0",
    "keras": "3.15.1",
    "adversarial-robustness-toolbox": "1.20.1",
    "tensorflow-datasets": "4.9.10",
    # tensorflow-datasets imports it without declaring it.
    "importlib_resources": "7.1.0",
    "numpy": "2.4.6",
    "pandas": "3.1.1",
    "matplotlib": "3.11.2",
    "tqdm": "4.70.1",
    "pillow": "13.0.0",
}

TEST = {
    "pytest": "9.0.3",
    "hypothesis": "6.155.2",
    "nbclient": "0.11.0",
    "nbformat": "5.11.1",
    "ipykernel": "7.4.0",
    # The zoo, C-IGM, Extract and Verify also run on Keras' JAX backend (GPU machines
    # may have JAX but not TensorFlow); tests/test_backends.py proves it on the CPU.
    "jax": "0.10.2",
    "jaxlib": "0.10.2",
}

# `pip install -e ".[cluster]"`: train the zoo as Ray tasks (cae.cluster, `cae zoo train
# --ray`). Part of the test extra too, so that CI runs tests/test_cluster.py.
CLUSTER = {
    "ray": "2.60.0",
}


def requirements(pins):
    """``name==version`` strings for a pin table."""
    return [f"{name}=={version}" for name, version in pins.items()]
