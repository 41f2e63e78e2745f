"""The notebooks, cae.figures and reproduce/all.py.

Fast tests (always run): the notebooks are valid nbformat v4 without outputs or
execution counts, start with a parameters cell and import only cae, numpy, matplotlib
and os; cae.figures' helpers on tiny inputs; reproduce/all.py's report on a stage that
needs no models.

Execution tests (``-m notebooks``): run every notebook with nbclient on real CIFAR-10
and the zoo of ``$CAE_NOTEBOOK_PRESET`` (default ``smoke``, which CI can afford; set it
to ``quick`` for the real thing). Skipped when the archive is absent, unless
``CAE_RUN_NOTEBOOKS=1`` makes that an error.
"""

import ast
import os
import pathlib
import subprocess
import sys
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nbformat  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from cae import figures, reports  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
EXPECTED = {"decision_space.ipynb", "baseline_attacks.ipynb", "fingerprint_walkthrough.ipynb"}
ALLOWED_IMPORTS = {"cae", "numpy", "matplotlib", "os"}


def test_expected_notebooks_exist():
    assert EXPECTED <= {path.name for path in NOTEBOOKS}


@pytest.fixture(params=NOTEBOOKS, ids=lambda path: path.name)
def notebook(request):
    return request.param, nbformat.read(request.param, as_version=nbformat.NO_CONVERT)


def test_notebook_is_valid_v4(notebook):
    path, nb = notebook
    assert nb.nbformat == 4, path
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"


def test_notebook_has_no_outputs(notebook):
    """Notebooks are committed clean: run them, then clear outputs before committing."""
    path, nb = notebook
    dirty = [i for i, cell in enumerate(nb.cells) if cell.cell_type == "code"
             and (cell.get("outputs") or cell.get("execution_count") is not None)]
    assert not dirty, f"{path.name}: cells {dirty} hold outputs or execution counts; clear them " \
                      "(jupyter nbconvert --clear-output --inplace)"


def test_notebook_first_code_cell_is_parameters(notebook):
    path, nb = notebook
    first = next(cell for cell in nb.cells if cell.cell_type == "code")
    assert "parameters" in first.metadata.get("tags", []), path.name
    assert 'PRESET = os.environ.get("CAE_NOTEBOOK_PRESET", "quick")' in first.source


def _imported_modules(source):
    modules = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            modules.add("." if node.level else node.module.split(".")[0])
    return modules


def test_notebook_imports_only_cae_numpy_matplotlib_os(notebook):
    path, nb = notebook
    imported = set()
    for cell in nb.cells:
        if cell.cell_type == "code":
            imported |= _imported_modules(cell.source)  # also fails on magics: not Python
    assert "cae" in imported
    assert imported <= ALLOWED_IMPORTS, f"{path.name} imports {sorted(imported - ALLOWED_IMPORTS)}"


def test_import_checker_catches_other_modules():
    assert _imported_modules("import pandas as pd\nfrom cae import figures") == {"pandas", "cae"}


def _notebook_preset():
    """The preset the notebooks run on here, or a skip reason."""
    from cae import data, presets

    preset = presets.get(os.environ.get("CAE_NOTEBOOK_PRESET", "smoke"))
    try:
        data.locate(preset.dataset)
    except data.DataError as err:
        if os.environ.get("CAE_RUN_NOTEBOOKS") == "1":
            raise
        return preset, f"the notebooks need real data: {err}"
    return preset, None


@pytest.fixture(scope="module")
def notebook_zoo():
    """Trains (or reuses) the zoo of the notebooks' preset once, before the first notebook."""
    from cae import experiments

    preset, skip = _notebook_preset()
    if skip:
        pytest.skip(skip)
    experiments.train_zoo(preset, verbose=False)
    return preset


@pytest.mark.notebooks
@pytest.mark.realdata
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_notebook_runs(name, notebook_zoo, tmp_path, monkeypatch):
    """Executes the notebook with nbclient on real CIFAR-10. The preset is
    ``$CAE_NOTEBOOK_PRESET``, default ``smoke`` (toy sizes, so CI can afford it; the
    notebooks' own default is ``quick``)."""
    from nbclient import NotebookClient

    monkeypatch.setenv("CAE_NOTEBOOK_PRESET", notebook_zoo.name)
    nb = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    if "CAE_RESULTS_DIR" not in os.environ:
        monkeypatch.setenv("CAE_RESULTS_DIR", str(tmp_path / "results"))
    started = time.time()
    NotebookClient(nb, timeout=1800, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [output for cell in nb.cells if cell.cell_type == "code" for output in cell.outputs
              if output.output_type == "error"]
    assert not errors
    images = [output for cell in nb.cells if cell.cell_type == "code" for output in cell.outputs
              if "image/png" in output.get("data", {})]
    assert images, f"{name} showed no figure"
    print(f"\n    notebook {name} executed on preset {notebook_zoo.name} in {time.time() - started:.0f} s, "
          f"{len(images)} figures")


# --------------------------------------------------------------------------- cae.figures
@pytest.mark.parametrize("seed", [0, 1, 7])
def test_orthogonal_direction_is_orthogonal_with_same_norm(seed):
    delta = np.random.default_rng(seed + 100).normal(size=(4, 4, 3))
    direction = figures.orthogonal_direction(delta, seed=seed)
    assert direction.shape == delta.shape
    assert abs(np.vdot(direction, delta)) < 1e-9 * np.vdot(delta, delta)
    assert np.linalg.norm(direction) == pytest.approx(np.linalg.norm(delta), rel=1e-12)
    assert not np.allclose(np.abs(direction), np.abs(delta))


def test_orthogonal_direction_depends_on_seed_and_rejects_zero():
    delta = np.ones((2, 2, 3))
    assert not np.allclose(figures.orthogonal_direction(delta, 0), figures.orthogonal_direction(delta, 1))
    np.testing.assert_array_equal(figures.orthogonal_direction(delta, 3), figures.orthogonal_direction(delta, 3))
    with pytest.raises(ValueError, match="non-zero"):
        figures.orthogonal_direction(np.zeros((2, 2, 3)))


def test_grid_values_symmetric_with_exact_centre():
    values = figures.grid_values(1.25, 41)
    assert values[0] == -1.25 and values[-1] == 1.25 and values[20] == 0.0
    np.testing.assert_allclose(values, -values[::-1])
    with pytest.raises(ValueError, match="resolution"):
        figures.grid_values(1.25, 1)


def test_plane_points_are_linear_without_clipping():
    x = np.full((2, 2, 3), 0.5)
    delta = np.full((2, 2, 3), 0.1)
    direction = np.zeros((2, 2, 3))
    direction[0, 0, 0] = 1.0
    points = figures.plane_points(x, delta, direction, [-1.0, 0.0, 2.0], [0.0, 3.0], clip=False)
    assert points.shape == (2, 3, 2, 2, 3)
    np.testing.assert_allclose(points[0, 2], x + 2 * delta, rtol=1e-6)
    assert points[1, 1, 0, 0, 0] == pytest.approx(3.5)
    clipped = figures.plane_points(x, delta, direction, [0.0], [3.0])
    assert clipped.max() == 1.0 and clipped.min() >= 0.0


class LinearModel:
    """A tiny deterministic 'model' with Keras' predict signature: linear scores."""

    def __init__(self, seed, num_classes=4):
        self.weights = np.random.default_rng(seed).normal(size=(4 * 4 * 3, num_classes))
        self.calls = 0

    def predict(self, x, batch_size=None, verbose=0):
        self.calls += 1
        return np.asarray(x, np.float64).reshape(len(x), -1) @ self.weights


@pytest.fixture
def plane():
    rng = np.random.default_rng(0)
    x = rng.uniform(0.3, 0.7, size=(4, 4, 3))
    delta = rng.uniform(-0.25, 0.25, size=(4, 4, 3))
    return x, delta, figures.orthogonal_direction(delta, seed=0)


def test_decision_grid_shape_and_centre(plane):
    x, delta, direction = plane
    models = [LinearModel(1), LinearModel(2)]
    a, b, labels = figures.decision_grid(models, x, delta, direction, resolution=9, max_points=20)
    assert a.shape == b.shape == (9,)
    assert labels.shape == (2, 9, 9)
    for model, grid in zip(models, labels):
        expected_centre = model.predict(x[None]).argmax()
        assert grid[4, 4] == expected_centre
        # Rows are b, columns a: the point a = a[7], b = b[1].
        point = np.clip(x + a[7] * delta + b[1] * direction, 0, 1)
        assert grid[1, 7] == model.predict(point[None]).argmax()
    assert len(np.unique(labels)) > 1  # the plane is not trivially one class
    assert models[0].calls > 2  # max_points split the grid into several batches


def test_decision_grid_rejects_mismatched_shapes(plane):
    x, delta, direction = plane
    with pytest.raises(ValueError, match="direction"):
        figures.decision_grid([LinearModel(1)], x, delta, direction[:2], resolution=3)


def test_decision_grid_with_keras_model(plane):
    import keras

    x, delta, direction = plane
    inputs = keras.Input((4, 4, 3))
    outputs = keras.layers.Dense(3, activation="softmax")(keras.layers.Flatten()(inputs))
    model = keras.Model(inputs, outputs)
    _, _, labels = figures.decision_grid([model], x.astype(np.float32), delta, direction, resolution=5)
    assert labels[0, 2, 2] == model.predict(x[None].astype(np.float32), verbose=0).argmax()


def test_most_conferrable_example_rule():
    # 3 surrogates, 2 references; targets t = 1 for all 5 examples.
    t = np.ones(5, dtype=np.int64)
    surrogates = np.array([[1, 1, 1, 1, 1], [1, 0, 1, 1, 1], [1, 0, 1, 1, 0]])
    references = np.array([[1, 0, 0, 0, 0], [0, 0, 0, 0, 0]])
    result = {"success": np.array([True, True, False, True, True]), "t": t,
              "test_surrogates": surrogates, "test_references": references}
    # Confer: 0.5, 1/3, 1 (unsuccessful), 1, 2/3 -> index 3 (index 2 is not successful).
    assert figures.most_conferrable_example(result) == (3, 1.0)
    result["success"][2] = True
    assert figures.most_conferrable_example(result)[0] == 2  # tie 2 vs 3: the smallest index
    result["success"][:] = False
    with pytest.raises(ValueError, match="no successful"):
        figures.most_conferrable_example(result)


def test_class_colours_fixed_per_class():
    assert len(figures.class_colours(10)) == 10
    assert len(set(figures.class_colours(100))) == 100
    cmap, norm = figures.class_colormap(10)
    for k in range(10):
        assert cmap(norm(k)) == figures.class_colours(10)[k]


def _space(labels, roles, names=None):
    resolution = labels.shape[-1]
    values = figures.grid_values(1.25, resolution)
    image = np.full((4, 4, 3), 0.5, np.float32)
    return figures.DecisionSpace(
        index=3, x=image, x_adv=image + 0.1, direction=np.zeros((4, 4, 3)), a_values=values, b_values=values,
        labels=labels, names=tuple(names or [f"model {i}" for i in range(len(roles))]), roles=tuple(roles),
        class_names=tuple(f"class{k}" for k in range(10)), label=0, key=1, conferrability=1.0,
        method="igm", eps=0.25, dataset="cifar10", preset="test", seed=0)


def test_plot_decision_space_layout_and_consistent_colours():
    labels = np.zeros((5, 5, 5), dtype=np.int64)
    labels[:, :, 3:] = 1
    labels[4, 0, 0] = 7
    roles = ["source", "surrogate", "surrogate", "reference", "reference"]
    figure = figures.plot_decision_space(_space(labels, roles))
    try:
        visible = [axis for axis in figure.axes if axis.get_visible() and axis.images]
        assert len(visible) == 5
        top, bottom = figure.axes[:3], figure.axes[3:]
        assert [len(axis.images) for axis in top] == [1, 1, 1]
        assert not figure.axes[5].get_visible()  # 3 columns; the bottom row has 2 references
        assert all(axis.images[0].cmap is visible[0].images[0].cmap for axis in visible)
        assert all(axis.images[0].norm is visible[0].images[0].norm for axis in visible)
        assert bottom[0].get_title().startswith("model 3")
        legend = figure.legends[0]
        texts = [text.get_text() for text in legend.get_texts()]
        assert texts[:3] == ["class0", "class1", "class7"]
        assert "x: class0, x+δ: class1" in top[0].get_title()
    finally:
        plt.close(figure)


def test_space_rows_report_shares():
    labels = np.zeros((2, 5, 5), dtype=np.int64)
    labels[0, :, 3:] = 1
    rows = _space(labels, ["source", "reference"]).rows()
    assert rows[0]["label of x (centre)"] == "class0"
    assert rows[0]["label at a=1, b=0"] == "class1"
    assert rows[0]["share of plane = t (class1)"] == pytest.approx(10 / 25)
    assert rows[1]["share of plane = t (class1)"] == 0.0


def test_amplify_maps_eps_ball_to_unit_range():
    np.testing.assert_allclose(figures.amplify(np.array([-0.1, 0.0, 0.1, 0.3]), 0.1), [0.0, 0.5, 1.0, 1.0])
    with pytest.raises(ValueError, match="eps"):
        figures.amplify(np.zeros(3), 0.0)


def test_fingerprint_grid_panels_and_titles():
    rng = np.random.default_rng(0)
    originals = rng.uniform(0.2, 0.8, size=(5, 4, 4, 3))
    fingerprints = np.clip(originals + rng.uniform(-0.1, 0.1, size=originals.shape), 0, 1)
    names = tuple(f"c{k}" for k in range(10))
    figure = figures.fingerprint_grid(originals, fingerprints, [0, 1, 2, 3, 4], [5, 6, 7, 8, 9], names, 0.1,
                                      targets=[5, 6, 0, 8, 9], columns=2)
    try:
        with_images = [axis for axis in figure.axes if axis.images]
        assert len(figure.axes) == 3 * 6 and len(with_images) == 15
        titles = [axis.get_title() for axis in with_images]
        assert titles[0] == "source: c0" and titles[2] == "key: c5"
        assert titles[8] == "key: c7\n(target c0)"
        np.testing.assert_allclose(with_images[1].images[0].get_array(),
                                   figures.amplify(fingerprints[0] - originals[0], 0.1))
    finally:
        plt.close(figure)
    with pytest.raises(ValueError, match="equal shape"):
        figures.fingerprint_grid(originals, fingerprints[:2], [0] * 5, [1] * 5, names, 0.1)


def test_fingerprint_figure_from_fingerprint_object():
    from cae import fingerprint

    rng = np.random.default_rng(1)
    originals = rng.uniform(0.2, 0.8, size=(4, 32, 32, 3)).astype(np.float32)
    x = np.clip(originals + 0.05, 0, 1).astype(np.float32)

    class Source:
        """Class 1 for bright images, else 0: a callable for create, .predict for the figure."""

        def predict(self, images, batch_size=None, verbose=0):
            return np.eye(10)[(np.asarray(images).mean(axis=(1, 2, 3)) > 0.5).astype(int)]

        __call__ = predict

    fp = fingerprint.create(Source(), x, attack="C-IGM", epsilon=0.05, tau=1.0, dataset="cifar10",
                            num_classes=10, originals=originals, created_with={"inputs": 10})
    fp = fp.with_calibration(fingerprint.Calibration(np.ones((1, 4)), [[1, 0, 0, 0], [1, 1, 0, 0]]))
    figure = figures.fingerprint_figure(Source(), fp, tuple(f"c{k}" for k in range(10)), n=3, columns=3)
    try:
        assert len([axis for axis in figure.axes if axis.images]) == 9
    finally:
        plt.close(figure)
    row = reports.fingerprint_row(fp)
    assert row["fingerprints"] == 4 and row["mean ‖δ‖∞"] == pytest.approx(0.05, abs=1e-6)
    assert row["calibration references' retention"] == "0.25, 0.50"
    assert row["calibration surrogates' retention"] == "1.00"


# --------------------------------------------------------------------------- reproduce/all.py
def test_all_runs_a_stage_and_writes_report(tmp_path):
    env = {**os.environ, "CAE_RESULTS_DIR": str(tmp_path), "CAE_CACHE_DIR": str(tmp_path / "cache"),
           "CAE_DATA_DIR": str(tmp_path / "no-data")}
    run = subprocess.run([sys.executable, str(ROOT / "reproduce" / "all.py"), "--preset", "quick",
                          "--only", "table1"], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    text = (tmp_path / "quick" / "RESULTS.md").read_text()
    assert "| table1 | ok |" in text and "| total |" in text
    assert "### Table I: attack parameters" in text  # the table itself is included, heading nested
    assert "| CW-L2 | 100 |" in text
    assert "figure5" not in text
    assert (tmp_path / "quick" / "logs" / "table1.log").is_file()


def test_all_report_lists_failures_figures_and_pending(tmp_path):
    import runpy

    from cae import presets

    script = runpy.run_path(str(ROOT / "reproduce" / "all.py"))  # not __main__: functions only
    stages = script["available_stages"]("cifar10")
    assert stages[:3] == ["table1", "table2", "figure4"]
    assert {"figure5", "figure8", "figure9", "figure10"} <= set(stages)
    if (ROOT / "reproduce" / "table4.py").is_file():  # Table IV = Table III on ImageNet32
        assert "table4" not in stages and "table4" in script["available_stages"]("imagenet32")
    folder = tmp_path / "quick"
    (folder / "logs").mkdir(parents=True)
    (folder / "figure5.md").write_text("# Figure 5 data\n\n| a |\n|---|\n| 1 |\n")
    (folder / "figure5.png").write_bytes(b"png")
    (folder / "logs" / "figure8.log").write_text("progress\rdone\nValueError: no conferrable example\n")
    outcomes = [
        {"stage": "figure5", "status": "ok", "seconds": 3.0, "files": [folder / "figure5.md", folder / "figure5.png"],
         "log": folder / "logs" / "figure5.log"},
        {"stage": "figure8", "status": "failed (exit 1)", "seconds": 2.5, "files": [],
         "log": folder / "logs" / "figure8.log"},
    ]
    text = script["report"](presets.get("quick"), folder, outcomes, pending=["figure9"])
    assert "| figure5 | ok | 3.0 |" in text and "| figure8 | failed (exit 1) | 2.5 |" in text
    assert "| figure9 | not run yet |" in text and "| total | | 5.5 |" in text
    assert "![figure5](figure5.png)" in text and "### Figure 5 data" in text
    assert "ValueError: no conferrable example" in text and "[logs/figure8.log](logs/figure8.log)" in text
