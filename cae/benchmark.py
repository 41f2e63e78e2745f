"""The peer benchmark (issue #19): every fingerprinting method of :mod:`cae.peers` on one zoo.

For a preset's context (:func:`cae.experiments.prepare`):

* **derived models** (positives): the testing surrogates (their own row) and every
  removal attack of :data:`cae.removal.REMOVAL_ATTACKS` asked for whose model is cached
  or can be trained (:func:`cae.evaluation.removal_models`; an attack that cannot, for
  want of data or a backend, is skipped and named in the notes), grouped by the
  attack's ``family``;
* **independent models** (negatives): the testing references and ``extra_references``
  more (:func:`cae.experiments.extra_reference_specs`, other training recipes in turn).

Every method extracts its fingerprint from the source once (cached in the context's
run folder, keyed by the zoo, the method and its settings; C-IGM reuses the cached
C-IGM run of :func:`cae.experiments.run_attack` and Algorithm 2's filter, without
calibration), then scores every model. One row per family: the ROC-AUC of the family's
derived models against all independent models (:func:`cae.stats.roc_auc`) and the TPR
at 1 % FPR, per method; an "all derived" row; families named by the later benchmark
but absent from this zoo stay empty. Beside them, clearly apart, the AUCs that later
benchmark published for this paper's method (:data:`cae.paper.BENCHMARK_CIGM_AUC`): quoted, not
measured here, on the row they belong to (:func:`quoted_row`; a family whose models
belong to several of its rows, model extraction with probabilities, labels or
adversarial training, is also split into one row per quoted row). A model of another
label set (transfer learning, ``cae.removal.OTHER_TASK`` where it exists) is scored
through its class mapping by the label-only methods and as is by SAC.

Pools: IPGuard and C-IGM start from the context's attack inputs (D1 images the source
classifies correctly, the defender's data); SAC-w, SAC-m and the mistakes baseline take
test images outside the zoo's evaluation sample (all test images when the preset
evaluates on all of them), with their labels; SAC-w's surrogates are the training
surrogates (the defender's own).
"""

from __future__ import annotations

import logging
import math
import pathlib
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from cae import data, evaluation, experiments, fingerprint, paper, paths, peers, removal, stats, tables, zoo

if TYPE_CHECKING:
    import keras

log = logging.getLogger(__name__)

# The quoted benchmark's row a derived model belongs to: by attack where the attack
# names it, else by family (a family named like a row is that row). Model extraction
# here learns the source's probabilities unless the attack says otherwise.
QUOTED_ROW_OF_ATTACK = {"extract_label": "label-only extraction", "adv_extract": "adversarial extraction"}
QUOTED_ROW_OF_FAMILY = {"model extraction": "probability extraction"}
TESTING_SURROGATES = "testing surrogates"
ALL_DERIVED = "all derived"
FPR = 0.01
_SKIPPABLE = (ValueError, OSError, ImportError)  # data.DataError is a ValueError


# --------------------------------------------------------------------------- suspects
def quoted_row(attack: str | None, family: str) -> str | None:
    """The quoted benchmark's row of a derived model of ``attack`` (None: no such row)."""
    row = QUOTED_ROW_OF_ATTACK.get(attack) or QUOTED_ROW_OF_FAMILY.get(family, family)
    return row if row in paper.BENCHMARK_CIGM_AUC else None


def _task_mapping(attack):
    """The class mapping of an attack whose model answers in another label set (transfer
    learning), else None (read from :mod:`cae.removal` where it defines them)."""
    if attack in getattr(removal, "OTHER_TASK", ()):
        return np.asarray(removal.task_mapping(attack), np.int64)
    return None


def suspects(context: experiments.Context, attacks: Sequence[str] = tuple(removal.REMOVAL_ATTACKS),
             extra_references: int = 0, verbose: bool = False,
             ) -> tuple[list[dict], list[tuple[str, keras.Model]], dict[str, str]]:
    """``(derived, independent, skipped)``. ``derived``: one dict per derived model,
    ``{"name", "family", "quoted", "model", "mapping"}`` (testing surrogates, then each
    removal attack of ``attacks`` that is cached or can be trained; ``quoted``: its row
    of the quoted benchmark; ``mapping``: the class mapping of a model of another label
    set, else None). ``independent``: ``[(name, model)]`` (testing references, then
    ``extra_references`` more). ``skipped``: ``{attack: reason}`` for attacks left out."""
    unknown = [a for a in attacks if a not in removal.REMOVAL_ATTACKS]
    if unknown:
        raise ValueError(f"unknown removal attack(s) {', '.join(map(repr, unknown))}; choose from "
                         f"{', '.join(removal.REMOVAL_ATTACKS)} or 'all'.")
    derived = [{"name": f"testing surrogate {i} ({spec.architecture})", "family": TESTING_SURROGATES,
                "quoted": None, "model": model, "mapping": None} for i, (spec, model)
               in enumerate(zip(context.specs["test_surrogates"], context.models["test_surrogates"]))]
    skipped = {}
    for attack in attacks:
        family = removal.REMOVAL_ATTACKS[attack].family
        try:
            model = evaluation.removal_models(context, (attack,), verbose=verbose)[attack]
        except _SKIPPABLE as err:
            log.warning("removal attack %s skipped: %s", attack, err)
            skipped[attack] = f"{type(err).__name__}: {err}"
            continue
        derived.append({"name": removal.REMOVAL_ATTACKS[attack].name, "family": family,
                        "quoted": quoted_row(attack, family), "model": model, "mapping": _task_mapping(attack)})
    independent = [(f"testing reference {i} ({spec.architecture})", model) for i, (spec, model)
                   in enumerate(zip(context.specs["test_references"], context.models["test_references"]))]
    for i, spec in enumerate(experiments.extra_reference_specs(context.specs, extra_references)):
        independent.append((f"extra reference {i} ({spec.architecture}, {spec.optimizer}, {spec.augment})",
                            context.store.get(spec, verbose=verbose)))
    if not derived or not independent:
        raise ValueError(f"the benchmark needs derived and independent models; this zoo gives {len(derived)} and "
                         f"{len(independent)} (add removal attacks or extra references).")
    return derived, independent, skipped


# --------------------------------------------------------------------------- fingerprints
def natural_pool(context: experiments.Context) -> tuple[np.ndarray, np.ndarray]:
    """Test images outside the zoo's evaluation sample, and their labels (all test
    images when the preset evaluates on all of them)."""
    dataset = context.dataset
    evaluated = zoo.test_subset(dataset, context.preset.evaluate_on or None)
    pool = np.setdiff1d(np.arange(len(dataset.y_test)), evaluated)
    if not len(pool):
        log.warning("the preset evaluates on every test image: the natural pool overlaps the evaluation sample")
        pool = np.arange(len(dataset.y_test))
    return data.to_float(dataset.x_test[pool]), dataset.y_test[pool]


def cigm_fingerprint(context: experiments.Context) -> peers.PeerFingerprint:
    """The preset's C-IGM fingerprint as a peer fingerprint: the cached C-IGM run at the
    preset's ε, transform and gradient blur, Algorithm 2's filter
    (:func:`cae.fingerprint.extract`), no calibration (the benchmark scores retention
    alone)."""
    preset = context.preset
    result = experiments.run_attack(context, "cigm", preset.epsilon, transform=preset.transform,
                                    smooth=preset.smooth)
    fp, _ = fingerprint.extract(
        context.models["source"], result["x_adv"], experiments.training_conferrability(result), tau=float(preset.tau),
        success=result["success"], attack="C-IGM", epsilon=float(preset.epsilon),
        dataset=context.specs["source"].dataset, source_model_hash=context.specs["source"].key,
        created_with={"preset": preset.name, "transform": preset.transform, "smooth": preset.smooth,
                      "benchmark": True})
    return peers.CIGMPeer.wrap(fp)


def peer_fingerprint(context: experiments.Context, method: str, seed: int = 0, settings: dict | None = None,
                     natural: tuple[np.ndarray, np.ndarray] | None = None) -> peers.PeerFingerprint:
    """Peer ``method``'s fingerprint of the context's source, cached by the zoo, the
    method, its ``settings`` (constructor arguments) and ``seed``. ``natural``: the
    natural pool, when already loaded (:func:`natural_pool`)."""
    if method == "cigm":
        if settings:
            raise ValueError("the benchmark's cigm fingerprint takes the preset's settings; give settings=None.")
        return cigm_fingerprint(context)
    peer = peers.get(method, **(settings or {}))
    key = context.key("peer", method, peer.settings(seed), context.preset.evaluate_on)
    path = context.folder() / f"peer-{method}-{key}.npz"
    if path.exists():
        try:
            return peers.PeerFingerprint.load(path)
        except (OSError, ValueError, KeyError, EOFError) as err:
            log.warning("re-extracting unreadable %s (%s)", path, err)
    if method in ("ipguard",):
        x_pool, y_pool = context.x, context.y
    else:
        x_pool, y_pool = natural if natural is not None else natural_pool(context)
    fp = peer.extract(context.models["source"], x_pool, y_pool, surrogates=context.models["train_surrogates"],
                      references=context.models["train_references"], seed=seed)
    fp.save(path)
    return fp


def test_accuracy(context: experiments.Context, model: keras.Model, mapping: np.ndarray | None = None) -> float:
    """Test accuracy on the zoo's evaluation sample; through ``mapping`` for a model of
    another label set (its task's labels are the mapped ones; accuracy drops are then
    against the source's accuracy on the source's labels)."""
    if mapping is None:
        return evaluation.test_accuracy(model, context.dataset, context.preset.evaluate_on)
    pick = zoo.test_subset(context.dataset, context.preset.evaluate_on or None)
    labels = zoo.predict(model, data.to_float(context.dataset.x_test[pick])).argmax(axis=1)
    return float(np.mean(labels == mapping[context.dataset.y_test[pick]]))


# --------------------------------------------------------------------------- the table
def groups(derived: Sequence[dict]) -> list[tuple[str, str | None, list[str]]]:
    """The table's rows as ``[(row name, quoted row or None, [derived names])]``: the
    testing surrogates, every family of :data:`cae.removal.FAMILIES` (and any other
    present), a family whose models belong to several quoted rows split into one row per
    quoted row beneath it, the quoted rows no model belongs to (empty), all derived."""
    present = list(dict.fromkeys(d["family"] for d in derived))
    families = [TESTING_SURROGATES] if TESTING_SURROGATES in present else []
    families += list(removal.FAMILIES) + [f for f in present if f not in removal.FAMILIES + (TESTING_SURROGATES,)]
    out, covered = [], set()
    for family in families:
        members = [d for d in derived if d["family"] == family]
        quoted = list(dict.fromkeys(d["quoted"] for d in members)) or [quoted_row(None, family)]
        covered.update(q for q in quoted if q)
        out.append((family, quoted[0] if len(quoted) == 1 else None, [d["name"] for d in members]))
        if len(quoted) > 1:
            out += [(f"{family}: {q or 'other'}", q, [d["name"] for d in members if d["quoted"] == q])
                    for q in quoted]
    out += [(row, row, []) for row in paper.BENCHMARK_CIGM_AUC if row not in covered]
    return out + [(ALL_DERIVED, None, [d["name"] for d in derived])]


def family_rows(scores: Mapping[str, Mapping[str, float]], derived: Sequence[dict],
                independent: Sequence[tuple[str, keras.Model]], methods: Sequence[str]) -> list[dict]:
    """One row per family (see :func:`groups`): ``scores[method][model name]``;
    ``derived``: :func:`suspects`' dicts; ``independent``: ``[(name, model)]``."""
    negatives = [name for name, _ in independent]
    rows = []
    for family, quoted, names in groups(derived):
        row = {"family": family, "derived models": len(names), "independent models": len(negatives)}
        for method in methods:
            title = peers.PEERS[method].title
            pos = [scores[method][n] for n in names]
            neg = [scores[method][n] for n in negatives]
            row[f"{title} AUC"] = stats.roc_auc(pos, neg) if pos else None
            row[f"{title} TPR@1%FPR"] = stats.tpr_at_fpr(pos, neg, FPR) if pos else None
        row["quoted row"] = quoted
        row["C-IGM AUC quoted (not ours)"] = paper.BENCHMARK_CIGM_AUC.get(quoted)
        rows.append(row)
    return rows


def columns(methods: Sequence[str]) -> list[str]:
    titles = [peers.PEERS[m].title for m in methods]
    return (["family", "derived models", "independent models"] + [f"{t} AUC" for t in titles]
            + [f"{t} TPR@1%FPR" for t in titles] + ["quoted row", "C-IGM AUC quoted (not ours)"])


def run(context: experiments.Context, methods: Sequence[str] = tuple(peers.PEERS),
        attacks: Sequence[str] = tuple(removal.REMOVAL_ATTACKS), extra_references: int | None = None,
        seed: int = 0, verbose: bool = False) -> dict[str, object]:
    """The benchmark on ``context``: returns ``{"rows", "models", "fingerprints", "skipped",
    "methods", "seconds"}`` (``rows``: :func:`family_rows`; ``models``: one row per
    model with its family, test accuracy and every method's score)."""
    unknown = [m for m in methods if m not in peers.PEERS]
    if unknown or not methods:
        raise ValueError(f"methods {list(methods)!r}: choose one or more of {', '.join(peers.PEERS)}.")
    methods = list(dict.fromkeys(methods))
    extra_references = context.preset.extra_references if extra_references is None else extra_references
    started = time.time()
    derived, independent, skipped = suspects(context, attacks, extra_references, verbose=verbose)
    natural = natural_pool(context) if set(methods) - {"cigm", "ipguard"} else None
    fingerprints, seconds = {}, {}
    for method in methods:
        began = time.time()
        fingerprints[method] = peer_fingerprint(context, method, seed=seed, natural=natural)
        seconds[method] = time.time() - began
        log.info("%s: %d inputs, %.1f s", method, fingerprints[method].n, seconds[method])
    everyone = [(d["name"], d["model"], d["mapping"]) for d in derived] + [(n, m, None) for n, m in independent]
    scores = {m: {name: float(peers.PEERS[m]().score(model, fingerprints[m], mapping=mapping))
                  for name, model, mapping in everyone} for m in methods}
    source_accuracy = test_accuracy(context, context.models["source"])
    family = {d["name"]: d["family"] for d in derived}
    models = []
    for name, model, mapping in everyone:
        accuracy = test_accuracy(context, model, mapping)
        models.append({"model": name, "kind": "derived" if name in family else "independent",
                       "family": family.get(name), "test accuracy": accuracy,
                       "accuracy drop": source_accuracy - accuracy,
                       **{peers.PEERS[m].title: scores[m][name] for m in methods}})
    return {"rows": family_rows(scores, derived, independent, methods), "models": models,
            "fingerprints": fingerprints, "skipped": skipped, "methods": methods, "seconds": seconds,
            "source accuracy": source_accuracy, "wall seconds": time.time() - started}


# --------------------------------------------------------------------------- output
def notes(result: Mapping[str, object]) -> str:
    methods = result["methods"]
    sizes = ", ".join(f"{peers.PEERS[m].title} {result['fingerprints'][m].n} inputs "
                      f"({result['seconds'][m]:.0f} s)" for m in methods)
    text = (f"Ours: ROC-AUC of each family's derived models against all independent models (testing references and "
            f"extra references), and TPR at {FPR:.0%} FPR; a score is each method's (label-only match rate for "
            f"IPGuard, the mistakes and C-IGM; minus SAC's correlation distance for SAC-w and SAC-m, which need "
            f"probabilities). Fingerprints: {sizes}. Source test accuracy {result['source accuracy']:.3f}. "
            f"Empty cells: no derived model of that family in this zoo.\n\n"
            f"'C-IGM AUC quoted (not ours)': {paper.BENCHMARK_SOURCE}. 'quoted row' names its row: model "
            f"extraction here learns the source's probabilities ('probability extraction') except "
            + ", ".join(f"{a} ('{r}')" for a, r in QUOTED_ROW_OF_ATTACK.items())
            + "; a family that mixes them is split beneath its own row. A model of another label set (transfer "
            "learning) is scored through its class mapping by the label-only methods and as is by SAC.\n")
    if result["skipped"]:
        left_out = "; ".join(f"{a} ({why})" for a, why in result["skipped"].items())
        text += f"\nRemoval attacks left out: {left_out}\n"
    return text


def figure(result: Mapping[str, object], path: pathlib.Path, title: str) -> pathlib.Path:
    """A heatmap of the AUCs: families by methods, empty cells grey, values written in."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, methods = result["rows"], result["methods"]
    titles = [peers.PEERS[m].title for m in methods]
    values = np.array([[np.nan if row[f"{t} AUC"] is None else row[f"{t} AUC"] for t in titles] for row in rows])
    labels = [row["family"] + (f"  [quoted C-IGM {row['C-IGM AUC quoted (not ours)']:.2f}]"
                               if row["C-IGM AUC quoted (not ours)"] is not None else "") for row in rows]
    fig, axis = plt.subplots(figsize=(1.3 * len(titles) + 4.5, 0.45 * len(rows) + 1.6))
    cmap = plt.get_cmap("viridis").with_extremes(bad="#dddddd")
    image = axis.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=0.0, vmax=1.0, aspect="auto")
    for (r, c), value in np.ndenumerate(values):
        axis.text(c, r, "–" if math.isnan(value) else f"{value:.2f}", ha="center", va="center",
                  color="black" if math.isnan(value) or value > 0.6 else "white", fontsize=8)
    axis.set_xticks(range(len(titles)), titles, rotation=30, ha="right")
    axis.set_yticks(range(len(rows)), labels, fontsize=8)
    axis.set_title(title, fontsize=9)
    fig.colorbar(image, ax=axis, label="ROC-AUC (ours)")
    fig.tight_layout()
    paths.atomic_save(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"), suffix=".png")
    plt.close(fig)
    return path


def write(result: Mapping[str, object], preset_name: str) -> pathlib.Path:
    """``results/<preset>/benchmark.{csv,md,png}`` and ``benchmark_models.{csv,md}``."""
    title = f"Peer fingerprints: ROC-AUC per removal-attack family (preset {preset_name})"
    tables.write("benchmark", preset_name, result["rows"], title, notes=notes(result),
                 columns=columns(result["methods"]))
    tables.write("benchmark_models", preset_name, result["models"],
                 f"Peer fingerprints: every model's score (preset {preset_name})")
    return figure(result, paths.results_dir(preset_name) / "benchmark.png", title)
