"""Training a preset's zoo on a Ray cluster: one Ray task per model, the same cache.

Every model that is not yet complete becomes one Ray task (Moritz et al., "Ray: A
Distributed Framework for Emerging AI Applications", OSDI 2018). A task trains its
model with :meth:`cae.zoo.Zoo.train` into the same content-addressed folder a serial
run uses (``$CAE_CACHE_DIR/zoo/<key>/``), so the atomic writes, the per-epoch
checkpoints and the resume after a kill are the zoo's own, unchanged; a task returns
only the model's folder and metrics. Parents come before children: a surrogate or a
removal attack's model waits for its source, a Papernot round for the round before
(:func:`ordered`). Ray holds a child back until the tasks it depends on have finished.

Worker hygiene: a task trains one model in a fresh worker process (``max_calls=1``),
so TensorFlow's thread pools and GPU memory start clean. TensorFlow's intra- and
inter-op threads are set to the task's CPUs (through ``CAE_THREADS`` and
:func:`cae.zoo.set_threads_from_env`, as a serial run does), GPU memory grows as needed
(``TF_FORCE_GPU_ALLOW_GROWTH``; ``XLA_PYTHON_CLIENT_PREALLOCATE=false`` under JAX), and
a task given no GPU sees none.

Same weights as a serial run: on the CPU, TensorFlow's results depend on its intra-op
thread count, not on its inter-op threads (README, "Training the zoo on a cluster"). So
a zoo trained here with ``cpus_per_task=c`` has the weight hashes of a serial zoo
trained with ``CAE_THREADS=c`` (``tests/test_cluster.py`` checks it). GPU kernels are not bitwise reproducible unless
``TF_DETERMINISTIC_OPS=1`` is set (it is passed on to the workers).

The cache and data folders must be at the same path on every node (a shared file
system): the driver passes ``CAE_CACHE_DIR``, ``CAE_DATA_DIR`` and the zoo folder to
the workers. Datasets that the driver's zoo holds only in memory (a model of your own,
test data) travel through Ray's object store.

A local Ray (no address) reaches no other machine: its processes talk over 127.0.0.1,
usage statistics are off, and the HTTP probes that Ray's API-server process makes for
cloud metadata go to a closed loopback port (see :func:`connect`).

:mod:`cae.plan` projects what a preset's zoo costs before anything is trained.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterable

from cae import paths, removal, zoo  # removal registers its training sets in the zoo (workers train them)

log = logging.getLogger(__name__)

# How `cae zoo train --ray` and CAE_RAY name a Ray started on this machine.
LOCAL = "local"
# Environment variable that sends experiments.train_zoo (and so every reproduce script)
# to Ray: "local" starts one on this machine, anything else is a cluster address.
ENVIRONMENT_VARIABLE = "CAE_RAY"
# Settings of the driver that the workers must share to train the same model.
FORWARDED = ("KERAS_BACKEND", "TF_DETERMINISTIC_OPS", "TF_ENABLE_ONEDNN_OPTS")
# A local Ray: single node on 127.0.0.1, no usage statistics (read when Ray is imported
# or started, so kept for the process).
LOCAL_RAY = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
# While a local Ray starts: HTTP requests of its processes go to a closed loopback port
# (Ray's API server asks 169.254.169.254 and metadata.google.internal which cloud it runs
# on, even with usage statistics off); Ray's own gRPC on 127.0.0.1 is exempt.
_CLOSED = "http://127.0.0.1:9"
_OFFLINE = {"http_proxy": _CLOSED, "https_proxy": _CLOSED, "HTTP_PROXY": _CLOSED, "HTTPS_PROXY": _CLOSED,
            "no_proxy": "127.0.0.1,localhost,::1", "NO_PROXY": "127.0.0.1,localhost,::1"}


def ray_available() -> bool:
    """Whether Ray can be imported (``pip install -e ".[cluster]"``)."""
    import importlib.util

    return importlib.util.find_spec("ray") is not None


def _require_ray():
    if not ray_available():
        raise RuntimeError('Ray is not installed; install cae\'s cluster extra: pip install -e ".[cluster]" '
                           "(or train serially without --ray).")


# --------------------------------------------------------------------------- order
def dependencies(spec: zoo.TrainSpec) -> list[str]:
    """Keys of the zoo models that must be complete before ``spec`` trains: its parent,
    and for a Papernot round r > 0 the round r - 1 substitute it augments with."""
    keys = [spec.parent] if spec.parent else []
    rounds = spec.option("papernot_rounds")
    if spec.labels == "papernot" and isinstance(rounds, int) and rounds > 0:
        keys.append(removal.papernot_specs(spec)[-2].key)
    return keys


def ordered(specs: Iterable[zoo.TrainSpec]) -> list[zoo.TrainSpec]:
    """The specs, each once, parents before children (otherwise in the given order).

    A Papernot round's earlier rounds are added when missing. A dependency that is not
    among the specs must already be in the zoo; :func:`train` checks that.
    """
    by_key = {}
    for spec in specs:
        rounds = spec.option("papernot_rounds") if spec.labels == "papernot" else None
        chain = removal.papernot_specs(spec) if isinstance(rounds, int) and rounds > 0 else [spec]
        for item in chain:
            by_key.setdefault(item.key, item)
    done, out = set(), []

    def visit(spec, path):
        if spec.key in done:
            return
        if spec.key in path:
            raise ValueError(f"zoo specs depend on each other in a cycle through {spec.key}.")
        for key in dependencies(spec):
            if key in by_key:
                visit(by_key[key], path | {spec.key})
        done.add(spec.key)
        out.append(spec)

    for spec in by_key.values():
        visit(spec, frozenset())
    return out


# --------------------------------------------------------------------------- Ray
@contextlib.contextmanager
def _environment(changes):
    saved = {name: os.environ.get(name) for name in changes}
    os.environ.update(changes)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def connect(address: str | None = None, *, num_cpus: int | None = None, num_gpus: float | None = None,
            verbose: bool = False) -> str:
    """Connect to Ray: join the cluster at ``address``, or start a local Ray on this
    machine (``None`` or ``"local"``; ``num_cpus`` / ``num_gpus`` default to what the
    machine has). Reuses a connection this process already has. Returns the address of
    the cluster's GCS (``host:port``).

    A local Ray uses loopback addresses only and sends nothing out (see the module doc).
    Set its environment before Ray is first imported in this process (``cae zoo train
    --ray`` does): Ray reads the single-node switch when it is imported.
    """
    _require_ray()
    if address in (None, "", LOCAL):
        if "ray" not in sys.modules:
            os.environ.update(LOCAL_RAY)
        import ray

        if ray.is_initialized():
            return ray.get_runtime_context().gcs_address
        for name, value in LOCAL_RAY.items():
            if os.environ.get(name) != value:
                log.warning("Ray was imported before cae.cluster set %s=%s; the local Ray may use this "
                            "machine's network address instead of 127.0.0.1", name, value)
        with _environment(_OFFLINE):
            context = ray.init(num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False,
                               configure_logging=False, log_to_driver=verbose, namespace="cae")
        log.info("started a local Ray at %s", context.address_info["gcs_address"])
        return context.address_info["gcs_address"]
    import ray

    if not ray.is_initialized():
        ray.init(address=address, configure_logging=False, log_to_driver=verbose, namespace="cae")
        log.info("joined the Ray cluster at %s", address)
    return ray.get_runtime_context().gcs_address


def configure_worker(cpus: float, gpus: float) -> None:
    """Set up this process to train one model with ``cpus`` CPUs and ``gpus`` GPUs
    (before Keras is imported): thread pools, GPU memory growth, no GPU when given none."""
    threads = max(1, int(cpus))
    os.environ["CAE_THREADS"] = str(threads)
    os.environ["TF_FORCE_GPU_ALLOW_GROWTH"] = "true"
    os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
    if not gpus:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
        if os.environ.get("KERAS_BACKEND") == "jax":
            os.environ["JAX_PLATFORMS"] = "cpu"
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        try:
            zoo.set_threads_from_env()
            for gpu in tf.config.list_physical_devices("GPU"):
                tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError as err:  # TensorFlow already initialised in this process
            log.warning("cannot configure TensorFlow for this task (%s); it keeps its settings", err)
    return threads


def _train_task(spec, settings, datasets, *_dependencies):
    """One Ray task: train (or find complete) one model; return its folder and metrics."""
    started = time.time()
    os.environ.update(settings["environment"])
    threads = configure_worker(settings["cpus"], settings["gpus"])
    store = zoo.Zoo(settings["root"], evaluate_on=settings["evaluate_on"], datasets=datasets or None)
    trained = not store.complete(spec)
    if trained:
        store.train(spec, verbose=False)
    import socket

    return {"key": spec.key, "role": spec.role, "architecture": spec.architecture,
            "folder": str(store.folder(spec)), "metrics": store.metrics(spec), "trained": trained,
            "pid": os.getpid(), "node": socket.gethostname(), "threads": threads,
            "started": started, "finished": time.time()}


def _check_resources(cpus_per_task, gpus_per_task, retries):
    if isinstance(cpus_per_task, bool) or not isinstance(cpus_per_task, (int, float)) or cpus_per_task < 1:
        raise ValueError(f"cpus_per_task={cpus_per_task!r}; give a number of CPUs, 1 or more "
                         "(TensorFlow's threads are set from it).")
    if isinstance(gpus_per_task, bool) or not isinstance(gpus_per_task, (int, float)) or gpus_per_task < 0 or (
            gpus_per_task > 1 and gpus_per_task != int(gpus_per_task)):
        raise ValueError(f"gpus_per_task={gpus_per_task!r}; give 0, a fraction of one GPU (0.5 puts two "
                         "models on a GPU) or a whole number of GPUs.")
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ValueError(f"retries={retries!r}; give a whole number, 0 or more.")


def train(specs: Iterable[zoo.TrainSpec], *, store: zoo.Zoo | None = None, address: str | None = None,
          cpus_per_task: float = 1, gpus_per_task: float = 0.0, retries: int = 2, verbose: bool = True,
          ) -> list[dict]:
    """Train every incomplete model of ``specs`` as a Ray task; return one dict per model.

    ``store``: the :class:`cae.zoo.Zoo` whose folder, evaluation size and in-memory
    datasets the workers use (default ``Zoo()``). ``address``: see :func:`connect`
    (a Ray this process already joined is reused). ``cpus_per_task`` (1 or more) and
    ``gpus_per_task`` (a fraction shares a GPU) are each task's Ray resources.
    ``retries``: how often Ray reruns a task whose worker died; the rerun resumes from
    the model's last epoch checkpoint.

    Each dict holds the model's ``key``, ``role``, ``architecture``, ``folder``,
    ``metrics``, ``trained`` (False when it was already complete) and, for the models
    trained now, the worker's ``pid``, ``node``, ``threads``, ``started`` and
    ``finished`` times. Raises RuntimeError after the last task when some failed
    (the models that finished stay in the zoo; a rerun resumes the others).
    """
    _check_resources(cpus_per_task, gpus_per_task, retries)
    store = store or zoo.Zoo()
    specs = ordered(specs)
    todo = [spec for spec in specs if not store.complete(spec)]
    keys = {spec.key for spec in specs}
    for spec in todo:
        missing = [key for key in dependencies(spec)
                   if key not in keys and not (store.root / key / "metrics.json").exists()]
        if missing:
            raise ValueError(f"model {spec.key} ({spec.role}) needs {', '.join(missing)}, which is neither among "
                             "the specs nor complete in the zoo; add its spec.")
    waiting = {spec.key for spec in todo}
    results = {spec.key: _cached_result(store, spec) for spec in specs if spec.key not in waiting}
    log.info("cluster: %d models, %d to train", len(specs), len(todo))
    if todo:
        results.update(_run(todo, store, address, cpus_per_task, gpus_per_task, retries, verbose))
    return [results[spec.key] for spec in specs]


def _cached_result(store, spec):
    return {"key": spec.key, "role": spec.role, "architecture": spec.architecture,
            "folder": str(store.folder(spec)), "metrics": store.metrics(spec), "trained": False}


def _run(todo, store, address, cpus_per_task, gpus_per_task, retries, verbose):
    from tqdm.auto import tqdm

    connect(address, verbose=verbose)
    import ray

    settings = {
        "root": str(store.root.resolve()), "evaluate_on": store.evaluate_on, "cpus": cpus_per_task,
        "gpus": gpus_per_task,
        "environment": {"CAE_CACHE_DIR": str(paths.cache_dir().resolve()),
                        "CAE_DATA_DIR": str(paths.data_dir().resolve()),
                        **{name: os.environ[name] for name in FORWARDED if name in os.environ}},
    }
    in_memory = store.datasets_in_memory()
    datasets = ray.put(in_memory) if in_memory else None
    task = ray.remote(num_cpus=cpus_per_task, num_gpus=gpus_per_task, max_calls=1, max_retries=retries,
                      name="cae.train")(_train_task)
    refs, pending = {}, {}
    for spec in todo:
        after = [refs[key] for key in dependencies(spec) if key in refs]
        refs[spec.key] = task.remote(spec, settings, datasets, *after)
        pending[refs[spec.key]] = spec
    results, failures = {}, []
    progress = tqdm(total=len(todo), desc="zoo on Ray", unit="model", disable=not verbose)
    while pending:
        (ref,), _ = ray.wait(list(pending), num_returns=1)
        spec = pending.pop(ref)
        try:
            result = ray.get(ref)
        except ray.exceptions.RayError as err:
            failures.append((spec, err))
            log.error("%s %s (%s) failed: %s", spec.role, spec.key, spec.architecture, _message(err))
        else:
            results[spec.key] = result
            log.info("%s %s (%s) done in %.0f s on %s, test accuracy %.3f", spec.role, spec.key, spec.architecture,
                     result["finished"] - result["started"], result["node"], result["metrics"]["test_accuracy"])
        progress.update()
    progress.close()
    if failures:
        spec, err = failures[0]
        raise RuntimeError(f"{len(failures)} of {len(todo)} models failed on Ray (first: {spec.role} {spec.key}: "
                           f"{_message(err)}); the {len(results)} that finished are in {store.root}, and a rerun "
                           "resumes the others from their last epoch.")
    return results


def _message(err):
    """The error's own message: the last line of the traceback Ray passes on."""
    lines = [line for line in str(err).splitlines() if line.strip()]
    return lines[-1] if lines else type(err).__name__
