"""Analysis and plotting shared by the figure scripts and the notebooks.

* Decision space (Figure 5, eq. 15 of the paper): the labels that models give on the
  plane ``f(a, b) = x + a·δ + b·Q`` around an input ``x``, where ``δ = x_adv - x`` is
  an adversarial perturbation and ``Q`` a random direction orthogonal to ``δ`` with
  the same L2 norm (:func:`orthogonal_direction`, :func:`decision_grid`,
  :func:`decision_space`, :func:`plot_decision_space`).
* Fingerprint images (Figures 8-10): original, amplified perturbation and fingerprint
  side by side, titled with the source's label of the original and the verification
  key (:func:`amplify`, :func:`fingerprint_grid`).

Every class keeps one colour in every panel and figure: :func:`class_colours` depends
only on the number of classes. Functions that draw return a matplotlib ``Figure``;
saving and closing it is the caller's job.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from cae import attacks, data, experiments, fingerprint, scores

if TYPE_CHECKING:
    import keras
    from matplotlib.colors import BoundaryNorm, ListedColormap
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)

EXTENT = 1.25        # a, b in [-1.25, 1.25] (Figure 5)
RESOLUTION = 41      # grid points per axis for the script (odd: the centre is on the grid)


# --------------------------------------------------------------------------- decision space
def orthogonal_direction(delta: np.ndarray, seed: int = 0) -> np.ndarray:
    """A random direction ``Q`` orthogonal to ``delta`` with ``||Q||_2 = ||delta||_2``.

    As in the paper, from the QR decomposition of the (D, 2) matrix whose columns are
    ``delta`` and a Gaussian vector drawn with ``seed`` (both flattened): the second
    column of Q is orthonormal to the first, which spans ``delta``. Returns an array of
    ``delta``'s shape, float64.
    """
    delta = np.asarray(delta, dtype=np.float64)
    flat = delta.ravel()
    length = np.linalg.norm(flat)
    if flat.size < 2:
        raise ValueError(f"delta has {flat.size} element(s); an orthogonal direction needs at least 2.")
    if not np.isfinite(length) or length == 0.0:
        raise ValueError(
            f"delta has L2 norm {length}; it must be finite and non-zero (is x_adv equal to x? "
            "pick an example whose attack changed the input)."
        )
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(np.stack([flat, rng.standard_normal(flat.size)], axis=1))
    direction = q[:, 1]
    return (direction * (length / np.linalg.norm(direction))).reshape(delta.shape)


def grid_values(extent: float = EXTENT, resolution: int = RESOLUTION) -> np.ndarray:
    """``resolution`` evenly spaced values in [-extent, extent]; 0 exactly when odd."""
    if isinstance(resolution, bool) or not isinstance(resolution, (int, np.integer)) or resolution < 2:
        raise ValueError(f"resolution={resolution!r} is not allowed; expected an int >= 2 (odd puts x on the grid).")
    if not np.isfinite(extent) or extent <= 0:
        raise ValueError(f"extent={extent!r} is not allowed; expected a positive number.")
    values = float(extent) * np.linspace(-1.0, 1.0, int(resolution))
    if resolution % 2:
        values[resolution // 2] = 0.0
    return values


def plane_points(x: np.ndarray, delta: np.ndarray, direction: np.ndarray, a_values: np.ndarray,
                 b_values: np.ndarray, clip: bool = True) -> np.ndarray:
    """Images ``x + a·δ + b·Q`` for every (b, a) pair: float32 (len(b), len(a), *x.shape).

    ``clip`` keeps them in the valid image range [0, 1] (the models are only defined
    there); with ``clip=False`` the plane is exactly linear.
    """
    x = np.asarray(x, dtype=np.float64)
    a = np.asarray(a_values, dtype=np.float64).reshape(1, -1, *([1] * x.ndim))
    b = np.asarray(b_values, dtype=np.float64).reshape(-1, 1, *([1] * x.ndim))
    points = x + a * np.asarray(delta, np.float64) + b * np.asarray(direction, np.float64)
    if clip:
        points = np.clip(points, 0.0, 1.0)
    return points.astype(np.float32)


def decision_grid(models: Sequence[keras.Model], x: np.ndarray, delta: np.ndarray, direction: np.ndarray,
                  extent: float = EXTENT, resolution: int = RESOLUTION, clip: bool = True, batch_size: int = 512,
                  max_points: int = 4096) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels of each model on the plane of eq. 15 around one image ``x`` (32, 32, 3).

    Returns ``(a_values, b_values, labels)``: ``labels[m, i, j]`` is the argmax class of
    ``models[m]`` at ``x + a_values[j]·δ + b_values[i]·Q`` (rows are b, columns a, so
    ``imshow(labels[m], origin="lower")`` puts a on the horizontal axis). With an odd
    ``resolution`` the centre ``labels[m, r // 2, r // 2]`` is the model's label of x.
    """
    x = np.asarray(x)
    if x.ndim != 3:
        raise ValueError(f"x has shape {x.shape}; expected one image (height, width, channels).")
    for name, value in (("delta", delta), ("direction", direction)):
        if np.shape(value) != x.shape:
            raise ValueError(f"{name} has shape {np.shape(value)}; expected x's shape {x.shape}.")
    models = list(models)
    a_values = grid_values(extent, resolution)
    b_values = grid_values(extent, resolution)
    labels = np.empty((len(models), len(b_values), len(a_values)), dtype=np.int64)
    # Points are built ``max_points`` at a time (about 50 MB for 32x32x3 images).
    rows_per_batch = max(1, int(max_points) // len(a_values))
    for start in range(0, len(b_values), rows_per_batch):
        rows = b_values[start:start + rows_per_batch]
        points = plane_points(x, delta, direction, a_values, rows, clip=clip)
        flat = points.reshape(-1, *x.shape)
        predicted = scores.predict_labels(models, flat, batch_size=batch_size, check_range=clip)
        labels[:, start:start + len(rows)] = predicted.reshape(len(models), len(rows), len(a_values))
    return a_values, b_values, labels


def most_conferrable_example(result: Mapping[str, np.ndarray], prefix: str = "test") -> tuple[int, float]:
    """The documented choice of Figure 5's example from one attack run.

    Among the successful examples (``result["success"]``), the one with the highest
    conferrability ``Confer(S, R, t)`` on the ``prefix`` ("test" or "train")
    surrogates and references, where ``t`` is the source's label of the adversarial
    example; ties go to the smallest index. Returns ``(index, conferrability)``.
    """
    success = np.asarray(result["success"], dtype=bool)
    if not success.any():
        raise ValueError("the attack run has no successful example; raise eps or use another attack.")
    confer = scores.confer(result[f"{prefix}_surrogates"], result[f"{prefix}_references"], result["t"])
    confer = np.where(success, confer, -np.inf)
    index = int(np.argmax(confer))  # argmax returns the first maximum: the smallest index
    return index, float(confer[index])


@dataclasses.dataclass(frozen=True, eq=False)
class DecisionSpace:
    """Figure 5's data: one example, the plane around it and every model's labels on it."""

    index: int                # position among the attack inputs (context.inputs)
    x: np.ndarray             # the original image
    x_adv: np.ndarray         # the adversarial example, x + δ
    direction: np.ndarray     # Q (orthogonal to δ, same L2 norm)
    a_values: np.ndarray
    b_values: np.ndarray
    labels: np.ndarray        # (models, len(b), len(a))
    names: tuple[str, ...]    # one panel title per model
    roles: tuple[str, ...]    # "source", "surrogate" or "reference"
    class_names: tuple[str, ...]
    label: int                # the source's label of x
    key: int                  # the source's label of x_adv (t)
    conferrability: float     # on the testing models
    method: str
    eps: float
    dataset: str
    preset: str
    seed: int

    @property
    def delta(self) -> np.ndarray:
        return self.x_adv.astype(np.float64) - self.x.astype(np.float64)

    def rows(self) -> list[dict[str, object]]:
        """Per model: labels of x and x_adv and the share of the plane labelled as each."""
        out = []
        centre = len(self.b_values) // 2, len(self.a_values) // 2
        adversarial = int(np.argmin(np.abs(self.a_values - 1.0)))  # the grid column nearest a = 1
        for name, role, grid in zip(self.names, self.roles, self.labels):
            out.append({
                "model": name, "role": role,
                "label of x (centre)": self.class_names[grid[centre]],
                "label at a=1, b=0": self.class_names[grid[centre[0], adversarial]],
                f"share of plane = t ({self.class_names[self.key]})": float(np.mean(grid == self.key)),
                f"share of plane = y ({self.class_names[self.label]})": float(np.mean(grid == self.label)),
            })
        return out


def decision_space(context: experiments.Context, method: str = "igm", eps: float = 0.25, example: int | None = None,
                   resolution: int = RESOLUTION, extent: float = EXTENT, seed: int = 0, clip: bool = True,
                   ) -> DecisionSpace:
    """Figure 5's data on a prepared :class:`cae.experiments.Context`.

    Runs (or loads from the cache) ``method`` at ``eps`` on the attack inputs; the
    example is ``example`` (an index into the attack inputs) or, by default, the one
    :func:`most_conferrable_example` picks on the testing models. The models are the
    source, the testing surrogates and the testing references, in that order.
    """
    result = experiments.run_attack(context, method, eps)
    confer = scores.confer(result["test_surrogates"], result["test_references"], result["t"])
    if example is None:
        index, _ = most_conferrable_example(result, "test")
    else:
        index = int(example)
        if not 0 <= index < len(result["t"]):
            raise ValueError(f"example={example!r} is out of range; expected 0..{len(result['t']) - 1}.")
        if not result["success"][index]:
            log.warning("example %d is not a successful %s example at eps=%s", index, method, eps)
    x = context.x[index]
    x_adv = result["x_adv"][index]
    delta = x_adv.astype(np.float64) - x.astype(np.float64)
    direction = orthogonal_direction(delta, seed=seed)
    models, names, roles = [context.models["source"]], ["source"], ["source"]
    for group, role in (("test_surrogates", "surrogate"), ("test_references", "reference")):
        for i, (model, spec) in enumerate(zip(context.models[group], context.specs[group]), start=1):
            models.append(model)
            names.append(f"testing {role} {i} ({spec.architecture})")
            roles.append(role)
    log.info("decision space of example %d (%s eps=%s), %d models, %dx%d grid",
             index, method, eps, len(models), resolution, resolution)
    a_values, b_values, labels = decision_grid(models, x, delta, direction, extent=extent,
                                               resolution=resolution, clip=clip)
    return DecisionSpace(
        index=index, x=x, x_adv=x_adv, direction=direction, a_values=a_values, b_values=b_values,
        labels=labels, names=tuple(names), roles=tuple(roles), class_names=tuple(context.dataset.class_names),
        label=int(context.y[index]), key=int(result["t"][index]), conferrability=float(confer[index]),
        method=method, eps=float(eps), dataset=context.preset.dataset, preset=context.preset.name, seed=seed,
    )


# --------------------------------------------------------------------------- colours
def class_colours(num_classes: int) -> list[tuple[float, float, float, float]]:
    """One RGBA colour per class, fixed by the number of classes only.

    tab10 up to 10 classes, tab20 up to 20, else evenly spread hues in a golden-ratio
    order with alternating brightness (neighbouring class indices get distant colours).
    """
    import matplotlib

    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ValueError(f"num_classes={num_classes!r}; expected a positive int.")
    if num_classes <= 10:
        return [matplotlib.colormaps["tab10"](i) for i in range(num_classes)]
    if num_classes <= 20:
        return [matplotlib.colormaps["tab20"](i) for i in range(num_classes)]
    hsv = matplotlib.colors.hsv_to_rgb
    colours = []
    for i in range(num_classes):
        hue = (i * 0.6180339887) % 1.0
        value = 0.95 if i % 2 == 0 else 0.6
        colours.append((*hsv((hue, 0.75, value)), 1.0))
    return colours


def class_colormap(num_classes: int) -> tuple[ListedColormap, BoundaryNorm]:
    """``(cmap, norm)`` mapping class index k to ``class_colours(num_classes)[k]``."""
    import matplotlib

    cmap = matplotlib.colors.ListedColormap(class_colours(num_classes), name=f"classes{num_classes}")
    norm = matplotlib.colors.BoundaryNorm(np.arange(num_classes + 1) - 0.5, num_classes)
    return cmap, norm


# --------------------------------------------------------------------------- Figure 5
def plot_decision_space(space: DecisionSpace, title: str | None = None, panel_size: float = 2.6) -> Figure:
    """Figure 5 from a :class:`DecisionSpace`.

    Top row: the source (first panel) and the testing surrogates; bottom row: the
    testing references. Each panel colours the plane by the model's label (one fixed
    colour per class, legend below); the circle marks the original x (a = b = 0), the
    star the adversarial example (a = 1, b = 0).
    """
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    top = [i for i, role in enumerate(space.roles) if role != "reference"]
    bottom = [i for i, role in enumerate(space.roles) if role == "reference"]
    columns = max(len(top), len(bottom), 1)
    figure, axes = plt.subplots(2, columns, figsize=(panel_size * columns + 0.6, panel_size * 2 + 1.8),
                                squeeze=False, sharex=True, sharey=True, layout="constrained")
    cmap, norm = class_colormap(len(space.class_names))
    extent = (space.a_values[0], space.a_values[-1], space.b_values[0], space.b_values[-1])
    centre = len(space.b_values) // 2, len(space.a_values) // 2
    adversarial = int(np.argmin(np.abs(space.a_values - 1.0)))
    for row, members in enumerate((top, bottom)):
        for column in range(columns):
            axis = axes[row, column]
            if column >= len(members):
                axis.set_visible(False)
                continue
            m = members[column]
            grid = space.labels[m]
            axis.imshow(grid, origin="lower", extent=extent, cmap=cmap, norm=norm, interpolation="nearest",
                        aspect="equal")
            axis.plot(0, 0, "o", markersize=7, markerfacecolor="white", markeredgecolor="black")
            axis.plot(1, 0, "*", markersize=11, markerfacecolor="white", markeredgecolor="black")
            names = space.class_names
            axis.set_title(f"{space.names[m]}\nx: {names[grid[centre]]}, x+δ: "
                           f"{names[grid[centre[0], adversarial]]}", fontsize=8)
            axis.tick_params(labelsize=7)
            if column == 0:
                axis.set_ylabel("b (random direction Q ⊥ δ)", fontsize=8)
            if row == 1 or column >= len(bottom):
                axis.set_xlabel("a (towards x + δ)", fontsize=8)
                axis.xaxis.set_tick_params(labelbottom=True)
    present = sorted(set(np.unique(space.labels).tolist()))
    colours = class_colours(len(space.class_names))
    handles = [Patch(facecolor=colours[k], edgecolor="black", linewidth=0.5, label=space.class_names[k])
               for k in present]
    handles += [
        Line2D([], [], marker="o", linestyle="", markerfacecolor="white", markeredgecolor="black",
               label="x (original, a = b = 0)"),
        Line2D([], [], marker="*", markersize=10, linestyle="", markerfacecolor="white",
               markeredgecolor="black", label="x + δ (a = 1, b = 0)"),
    ]
    figure.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 6), fontsize=8,
                  frameon=False)
    names = space.class_names
    method = attacks.REGISTRY[space.method].name if space.method in attacks.REGISTRY else space.method
    figure.suptitle(title or (
        f"Figure 5 — decision space around attack input #{space.index} ({names[space.label]} → "
        f"{names[space.key]}), {method} ε = {space.eps:g}, {data.title(space.dataset)}, "
        f"preset {space.preset}\nconferrability on the testing models {space.conferrability:.2f}; "
        f"top: source + testing surrogates, bottom: testing references"), fontsize=9)
    return figure


# --------------------------------------------------------------------------- Figures 8-10
def amplify(delta: np.ndarray, eps: float) -> np.ndarray:
    """A perturbation as an image: ``0.5 + δ / (2ε)``, so -ε is black, 0 mid-grey and +ε
    white in each channel (clipped to [0, 1])."""
    if not np.isfinite(eps) or eps <= 0:
        raise ValueError(f"eps={eps!r}; expected a positive number.")
    return np.clip(0.5 + np.asarray(delta, dtype=np.float64) / (2.0 * eps), 0.0, 1.0)


def fingerprint_grid(originals: np.ndarray, fingerprints: np.ndarray, original_labels: np.ndarray, keys: np.ndarray,
                     class_names: Sequence[str], eps: float, targets: np.ndarray | None = None, columns: int = 2,
                     title: str | None = None, panel_size: float = 1.5) -> Figure:
    """Figures 8-10: for each example, the original, the amplified perturbation and the
    fingerprint, side by side; ``columns`` examples per row.

    Titles: the source's label of the original, ``δ`` with its L-inf norm, and the
    verification key (the source's label of the fingerprint; with ``targets``, the
    attack's target class when it differs from the key).
    """
    import matplotlib.pyplot as plt

    originals = np.asarray(originals, dtype=np.float64)
    fingerprints = np.asarray(fingerprints, dtype=np.float64)
    n = len(originals)
    if n == 0 or fingerprints.shape != originals.shape:
        raise ValueError(
            f"originals {originals.shape} and fingerprints {fingerprints.shape} must be non-empty and of "
            "equal shape (n, height, width, channels)."
        )
    if len(original_labels) != n or len(keys) != n or (targets is not None and len(targets) != n):
        raise ValueError(f"give one original label, key (and target) per example ({n}).")
    if isinstance(columns, bool) or not isinstance(columns, (int, np.integer)) or columns < 1:
        raise ValueError(f"columns={columns!r}; expected a positive int.")
    columns = min(int(columns), n)
    rows = -(-n // columns)
    # Each example's three panels, then a narrow gap before the next example's.
    ratios = ([1.0, 1.0, 1.0, 0.25] * columns)[:-1]
    figure = plt.figure(figsize=(panel_size * sum(ratios), panel_size * rows + 0.9))
    grid = figure.add_gridspec(rows, len(ratios), width_ratios=ratios)
    axes = np.array([[figure.add_subplot(grid[row, 4 * (c // 3) + c % 3]) for c in range(3 * columns)]
                     for row in range(rows)])
    for axis in axes.ravel():
        axis.set_axis_off()
    for i in range(n):
        row, group = divmod(i, columns)
        delta = fingerprints[i] - originals[i]
        key = class_names[int(keys[i])]
        key_title = f"key: {key}"
        if targets is not None and int(targets[i]) != int(keys[i]):
            key_title += f"\n(target {class_names[int(targets[i])]})"
        panels = (
            (originals[i], f"source: {class_names[int(original_labels[i])]}"),
            (amplify(delta, eps), f"δ, ‖δ‖∞ = {np.abs(delta).max():.2f}"),
            (fingerprints[i], key_title),
        )
        for k, (image, text) in enumerate(panels):
            axis = axes[row, 3 * group + k]
            axis.imshow(np.clip(image, 0.0, 1.0), interpolation="nearest")
            axis.set_title(text, fontsize=7)
    figure.suptitle(title or f"C-IGM fingerprints, ε = {eps:g}", fontsize=9)
    figure.text(0.5, 0.005, f"perturbation shown as 0.5 + δ / (2ε) per channel (−ε black, 0 grey, +ε white; "
                f"×{1 / (2 * eps):.1f})", ha="center", va="bottom", fontsize=7)
    figure.tight_layout(rect=(0, 0.03, 1, 1))
    return figure


def fingerprint_figure(source: keras.Model, fp: fingerprint.Fingerprint, class_names: Sequence[str], n: int = 12,
                       columns: int = 3, title: str | None = None) -> Figure:
    """Figures 8-10 from a :class:`cae.fingerprint.Fingerprint` that stores its
    originals: its first ``n`` examples (in the order of the attack inputs)."""
    if fp.originals is None:
        raise ValueError("the fingerprint has no originals; create it with originals= (experiments.extract does).")
    n = min(int(n), fp.n)
    originals = np.asarray(fp.originals[:n])
    original_labels = scores.predict_labels([source], originals)[0]
    targets = None if fp.targets is None else fp.targets[:n]
    return fingerprint_grid(originals, fp.x[:n], original_labels, fp.keys[:n], class_names,
                            float(fp.manifest["epsilon"]), targets=targets, columns=columns, title=title)
