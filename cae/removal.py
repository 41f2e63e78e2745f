"""Removal attacks: how an adversary tries to break the link to the source (Tables V, VI).

Every attack here leaves the model it is given unchanged and returns a new one. Each
derived model is an ordinary zoo model: :func:`removal_spec` turns the source's
:class:`~cae.zoo.TrainSpec` into the attack's spec (its ``parent`` is the source's key),
the training sets that need special labels or data are registered in
:data:`cae.zoo.TRAINING_SETS` below, and :func:`remove` returns ``zoo.get(spec)``, so
every derived model is cached, resumable, and named by everything that made it.

The adversary holds D2 (``data="D2"``) and white-box access to the source (Section II-D).
The paper: "For fine-tuning and adversarial training we use 10.000 inputs labeled by the
source model and create 1000 adversarial examples. Model extraction uses all the data
available to the adversary." Here these sizes are the preset's ``finetune_examples`` and
``adversarial_examples``; extraction uses all of D2. Every model the paper's attacks
derive has the source's architecture (the paper attacks a ResNet20 source with ResNet20
targets).

Model extraction (trained from scratch on D2, ``preset.surrogate_epochs`` or the
preset's ``architecture_epochs`` for the copy's architecture, the source's optimiser and
learning rate):

``retraining``
    Distillation at T = 1 on the source's softmax (``labels="distill"``).
``jagielski``
    Jagielski et al. (USENIX Security 2020) as the paper describes it (eq. 4): the
    source's softmax M(x) is treated as logits and re-tempered,
    M'(x) = softmax(M(x) / T'). The paper gives no value of T'. We use T' = 0.2: since
    M(x) lies in [0, 1], T' = 1 would give almost uniform labels (a one-hot M(x) becomes
    0.23 on its class for K = 10 and 0.03 for K = 100), while T' = 0.2 keeps about the
    source's confidence for K = 10 (M(x) = (0.8, 0.1, 0.1/8, ...) gives 0.84 on the top
    class) and flattens the ranking of the other classes, which is what separates it
    from Retraining. Option ``jagielski_temperature``.
``papernot``
    Jacobian-based dataset augmentation (Papernot et al., AsiaCCS 2017). A seed set S_0
    of |D2| / 2^R random D2 images is labelled by the source; in round r a substitute
    F_r is trained on S_r and S_{r+1} = S_r ∪ {clip(x + λ·sign(∇_x log F_r(x)_{O(x)}))}
    where O(x) is the source's label of x (sign(∇ log F_y) = sign(∇ F_y), the Jacobian
    row of the paper, computed from the logits so it does not vanish when the softmax
    saturates). The returned model is F_R, trained on S_R (|D2| images). λ = 0.1 in
    every round (the original's periodic sign flip of λ is not used), R = 3. New points
    are labelled with the source's probabilities (T = 1): the paper runs all its
    distillation attacks with white-box access and soft labels; the original, a
    black-box attack, used hard labels. Round r is its own zoo model (option
    ``papernot_rounds`` = r); its training set is rebuilt from the cached round r - 1
    substitute, so the chain is deterministic and resumes where it stopped.
``knockoff``
    Knockoff Nets (Orekondy et al., CVPR 2019), random selection: a budget of |D2|
    queries drawn at random, without replacement, from a transfer set and labelled with
    the source's probabilities. The paper's transfer set has nine times as many classes
    as the source's task; with the offline CIFAR-10 setup there is no such image pool,
    so the default transfer set is D2 itself, and Knockoff then is Retraining on D2 with
    its own seed. Option ``knockoff_transfer`` (default: the preset's) names another
    dataset whose whole training pool is the transfer set: the ``paper`` preset uses
    ``"imagenet32"`` (100 classes) for its CINIC-10 source. For the ImageNet32 source
    the paper's pool, the other 900 ImageNet classes, is not read by cae: D2 is used.
    Test images are never used, and CIFAR-10 and CINIC-10 cannot serve as each other's
    transfer set: CINIC-10 contains all 60,000 CIFAR-10 images, the test ones included.

Fine-tuning (Section VI-C; Adi et al. 2018's four variants), from the source's weights,
on ``preset.finetune_examples`` random D2 images labelled with the source's hard labels
(argmax), ``preset.finetune_epochs`` epochs, Adam with cosine decay:

``ftll``  fine-tune the last layer only, learning rate 1e-4;
``ftal``  fine-tune all layers, 1e-4;
``rtll``  re-initialise the last layer and train only it, 1e-2 (a fresh linear layer on
          frozen features needs larger steps to learn in a few epochs; 1e-3 left it far
          below the source's accuracy on the quick preset);
``rtal``  re-initialise the last layer and train all layers, 1e-3 (Adam's default; the
          fresh layer's early gradients disturb the whole network; steps from 1e-4 to
          1e-2 did no better on the quick preset).

Adversarial training (``adv_fgm``, ``adv_pgd``, ``adv_igm``): the source is fine-tuned
(all layers, 1e-4, ``preset.finetune_epochs``) on the fine-tuning set plus
``preset.adversarial_examples`` adversarial examples crafted once against the source,
from random inputs of that set, labelled with the source's label of the clean input.
L-inf, ε = 0.03; PGD and IGM take 10 steps of 0.01 (PGD from one random start). ART's
``FastGradientMethod``, ``ProjectedGradientDescent`` and ``BasicIterativeMethod`` on a
``TensorFlowV2Classifier`` of the source's logits.

Ensemble attack (``ensemble``): D2 is split into n = 3 disjoint random parts, a
Retraining surrogate is trained on each, and :func:`ensemble_attack` returns one Keras
model averaging their softmax outputs (average voting), built from built-in layers only.
It is composed from the cached members, not trained, and not cached itself.

Beyond the paper's attacks (issue 19; settings chosen a priori, not tuned, and not in
Tables V / VI, whose scripts run :data:`PAPER_ATTACKS`):

``prune20``, ``prune50``, ``prune80`` (fine-pruning)
    Global magnitude pruning of the source: the given fraction (20 / 50 / 80 %) of the
    weights of all convolution and dense kernels (the logits layer included; biases,
    BatchNorm and normalisation left alone), those of smallest absolute value over the
    whole network, is set to zero (:func:`prune_masks`, ties broken by position, so the
    mask is a function of the source's weights). The pruned network is then fine-tuned
    like FTAL (all layers, the fine-tuning set with the source's hard labels,
    ``preset.finetune_epochs``), but with Adam at 1e-3 (chosen a priori: a pruned
    network has more to recover than FTAL's 1e-4 may allow), and the mask is
    re-applied after every batch (a Keras callback), so the pruned weights stay zero
    throughout and in the saved model. Option ``prune_fraction``. Liu et al.'s
    fine-pruning (RAID 2018) prunes whole neurons; this prunes single weights (global
    magnitude pruning, Han et al., NeurIPS 2015).
``transfer`` (transfer learning)
    The source's feature extractor (every layer up to the input of its ``logits``
    Dense layer, with its weights) under a new head for another label set: a Dense
    layer of k classes (seeded by the spec) and a softmax. Fine-tuned, all layers, on
    the fine-tuning set with ground-truth labels of the new task, Adam at 1e-3 (as
    RTAL: a fresh head), ``preset.finetune_epochs``. The task is a coarsening of the
    source's classes (option ``transfer_mapping``, one task class per source class; an
    external source's "ground truth" is the source's own label). The default,
    :data:`TRANSFER_MAPPING`, groups CIFAR-10's (and CINIC-10's) classes, in their
    order, into the five pairs of :data:`TRANSFER_CLASSES`: airplane+ship,
    automobile+truck, bird+frog, cat+dog, deer+horse. Such a model answers in the
    task's label space, so :func:`cae.fingerprint.verify` refuses it (the number of
    classes differs); :func:`map_fingerprint` maps every key t to ``mapping[t]``, and
    :func:`verify_transfer` counts the transferred model's matches through it. The
    fingerprint's calibration (θ, p-values) is of the source's label space and is
    dropped: a chance match is likelier among k task classes than among K (an
    independent model agrees with a key at rate about 1/k, not 1/K), so retention
    through a mapping is not comparable with retention in the source's task.
``extract_prob``, ``extract_label`` (extraction into another architecture)
    Retraining (the source's probabilities, T = 1, ``labels="distill"``) and label-only
    extraction (the source's hard labels, ``labels="source_labels"``), from scratch on
    all of D2 into another architecture: setting ``architecture``, by default the
    first architecture the preset lists (source's, then its groups') other than the
    source's, or, if it lists none, the first of :data:`cae.models.ARCHITECTURES`
    other than the source's (``rescnn`` for a ``cnn`` source). The source's own
    architecture is refused (that is ``retraining``). :func:`extraction_architectures`
    lists the preset's others, one model each.
``adv_extract`` (adversarial extraction)
    Label-only extraction in which the copy is adversarially trained while it learns
    (Madry et al., ICLR 2018, on the source's labels): each batch of the epoch's
    images, labelled with the source's hard label of the clean (augmented) image, has
    its first half (a random half: the epoch is shuffled) replaced by L-inf PGD
    examples of the copy itself, crafted against the copy's current weights on the
    source's labels (ε = 0.03, 10 steps of 0.01, one random start; option
    ``adversarial_attack="fgm"`` for one step), so each optimiser step sees 50 %
    clean and 50 % adversarial images (option ``adversarial_fraction``). The source's
    architecture by default (setting ``architecture``). About 10 gradient
    evaluations per adversarial image: several times Retraining's cost.

Attacking a model the zoo did not train: :func:`remove_model` takes any Keras model and
the adversary's images (the issue's ``remove(source, adversary_data, spec)``); it holds
the source in the zoo under its weight hash and the images as an in-memory dataset, then
runs :func:`remove`. ``cae remove`` is its command line.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from cae import checks, data, fingerprint, paths, presets, zoo

if TYPE_CHECKING:
    import keras
    from art.attacks import EvasionAttack

# cae.models and cae.attacks import Keras; they are imported inside the functions that use
# them, so that importing this module (as the zoo's training workers do, cae.cluster) does
# not start Keras before a worker has set its threads and devices.

log = logging.getLogger(__name__)

REMOVAL_SEED = 5000  # seeds of removal models (the zoo's groups use 0 and 1000-4999)
JAGIELSKI_TEMPERATURE = 0.2  # T' (our choice; the paper gives none, see the module doc)
PAPERNOT_LAMBDA = 0.1
PAPERNOT_ROUNDS = 3
ADVERSARIAL_EPS = 0.03  # L-inf, pixel units in [0, 1]
ADVERSARIAL_EPS_STEP = 0.01
ADVERSARIAL_MAX_ITER = 10
ADVERSARIAL_METHODS = ("fgm", "pgd", "igm")
# The options of the training sets that craft adversarial examples while they are made or fit.
_ADVERSARIAL_OPTIONS = ("adversarial_attack", "adversarial_eps", "adversarial_eps_step", "adversarial_max_iter")
PRUNE_FRACTIONS = (0.2, 0.5, 0.8)
# Transfer learning's task: CIFAR-10's classes (airplane, automobile, bird, cat, deer, dog,
# frog, horse, ship, truck) grouped into five pairs.
TRANSFER_MAPPING = (0, 1, 2, 3, 4, 3, 2, 4, 0, 1)
TRANSFER_CLASSES = ("airplane+ship", "automobile+truck", "bird+frog", "cat+dog", "deer+horse")
ADVERSARIAL_FRACTION = 0.5  # adversarial extraction: adversarial share of each batch
FAMILIES = ("model extraction", "fine-tuning", "adversarial training", "ensemble", "pruning",
            "transfer learning")
# RemovalAttack.architecture: "" the source's; "any" a setting, default the source's;
# "other" a setting, default another architecture of the preset, never the source's.
_ARCHITECTURE_RULES = ("", "any", "other")


@dataclasses.dataclass(frozen=True)
class RemovalAttack:
    """How one removal attack derives its model from the source.

    ``labels`` names the training set (:data:`cae.zoo.TRAINING_SETS`). ``fine_tune``
    attacks start from the source's weights and use ``preset.finetune_examples`` D2
    images for ``preset.finetune_epochs`` epochs; the others train from scratch on all
    of D2 for ``preset.surrogate_epochs`` epochs (``preset.architecture_epochs`` of the
    copy's architecture where it lists one). ``learning_rate`` None keeps the
    source's. ``options`` are the attack's settings, as TrainSpec options (any of them
    can be changed through :func:`removal_spec`'s keyword arguments).
    """

    name: str
    family: str
    labels: str
    fine_tune: bool = False
    # Added to REMOVAL_SEED: attacks that would otherwise train the same model (Knockoff
    # on D2 is Retraining) start from different initial weights.
    seed_offset: int = 0
    learning_rate: float | None = None
    options: tuple[tuple[str, object], ...] = ()
    note: str = ""
    # Which architecture the derived model has (see _ARCHITECTURE_RULES); "any" and
    # "other" make ``architecture`` a setting of removal_spec.
    architecture: str = ""

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise ValueError(f"RemovalAttack family {self.family!r}; expected one of {FAMILIES}.")
        if self.architecture not in _ARCHITECTURE_RULES:
            raise ValueError(f"RemovalAttack architecture {self.architecture!r}; expected one of "
                             f"{_ARCHITECTURE_RULES}.")

    def row(self) -> dict[str, object]:
        """One line of the settings table (:func:`rows`)."""
        init = "source" if self.fine_tune else "scratch"
        if self.labels == "transfer":
            init = "source's features, new head"
        return {
            "Attack": self.name, "Family": self.family, "Training set": self.labels,
            "Init": init,
            "Architecture": {"": "source's", "any": "source's unless set",
                             "other": "another of the preset's"}[self.architecture],
            "Data": "finetune_examples of D2" if self.fine_tune else "all of D2",
            "Epochs": "finetune_epochs" if self.fine_tune else "surrogate_epochs",
            "lr": self.learning_rate if self.learning_rate is not None else "source's",
            "Settings": ", ".join(f"{k}={v}" for k, v in self.options) or None,
            "note": self.note or None,
        }


def _adversarial(method):
    return RemovalAttack(
        f"Adv. training {method.upper()}", "adversarial training", "adversarial", fine_tune=True,
        learning_rate=1e-4,
        options=(("adversarial_attack", method), ("adversarial_eps", ADVERSARIAL_EPS))
        + ((("adversarial_eps_step", ADVERSARIAL_EPS_STEP), ("adversarial_max_iter", ADVERSARIAL_MAX_ITER))
           if method != "fgm" else ()),
        note="plus preset.adversarial_examples examples crafted against the source",
    )


REMOVAL_ATTACKS = {
    "retraining": RemovalAttack("Retraining", "model extraction", "distill", note="T = 1"),
    "jagielski": RemovalAttack("Jagielski", "model extraction", "jagielski",
                               options=(("jagielski_temperature", JAGIELSKI_TEMPERATURE),),
                               note="labels softmax(M(x) / T')"),
    "papernot": RemovalAttack("Papernot", "model extraction", "papernot",
                              options=(("papernot_lambda", PAPERNOT_LAMBDA), ("papernot_rounds", PAPERNOT_ROUNDS)),
                              note="seed set |D2| / 2^rounds, doubled every round"),
    "knockoff": RemovalAttack("Knockoff", "model extraction", "knockoff", seed_offset=1,
                              note="random selection; transfer set D2 unless knockoff_transfer is set"),
    "ftll": RemovalAttack("FTLL", "fine-tuning", "source_labels", fine_tune=True, learning_rate=1e-4,
                          options=(("train_last_only", True),)),
    "ftal": RemovalAttack("FTAL", "fine-tuning", "source_labels", fine_tune=True, learning_rate=1e-4),
    "rtll": RemovalAttack("RTLL", "fine-tuning", "source_labels", fine_tune=True, learning_rate=1e-2,
                          options=(("reinit_last", True), ("train_last_only", True))),
    "rtal": RemovalAttack("RTAL", "fine-tuning", "source_labels", fine_tune=True, learning_rate=1e-3,
                          options=(("reinit_last", True),)),
    "adv_fgm": _adversarial("fgm"),
    "adv_pgd": _adversarial("pgd"),
    "adv_igm": _adversarial("igm"),
    "ensemble": RemovalAttack("Ensemble attack", "ensemble", "distill", options=(("parts", 3),),
                              note="one Retraining surrogate per part, softmax averaged"),
}
# The attacks of Tables V / VI (the paper's, with Retraining and IGM adversarial training):
# what the tables, the verification figure and the zoo plan run by default.
PAPER_ATTACKS = tuple(REMOVAL_ATTACKS)


def _pruning(fraction):
    return RemovalAttack(
        f"Fine-pruning {fraction:.0%}", "pruning", "prune", fine_tune=True, learning_rate=1e-3,
        options=(("prune_fraction", fraction),),
        note="global magnitude pruning of conv and dense kernels; mask re-applied after every batch",
    )


REMOVAL_ATTACKS.update({
    **{f"prune{round(f * 100)}": _pruning(f) for f in PRUNE_FRACTIONS},
    "transfer": RemovalAttack(
        "Transfer learning", "transfer learning", "transfer", fine_tune=True, learning_rate=1e-3,
        options=(("transfer_mapping", TRANSFER_MAPPING),),
        note="source's features, new head for 5 coarse classes; verify through map_fingerprint"),
    "extract_prob": RemovalAttack("Extraction (probabilities)", "model extraction", "distill",
                                  architecture="other", note="T = 1, into another architecture"),
    "extract_label": RemovalAttack("Extraction (labels)", "model extraction", "source_labels",
                                   architecture="other", note="hard labels, into another architecture"),
    "adv_extract": RemovalAttack(
        "Adversarial extraction", "model extraction", "adversarial_extraction", architecture="any",
        options=(("adversarial_attack", "pgd"), ("adversarial_eps", ADVERSARIAL_EPS),
                 ("adversarial_eps_step", ADVERSARIAL_EPS_STEP), ("adversarial_max_iter", ADVERSARIAL_MAX_ITER),
                 ("adversarial_fraction", ADVERSARIAL_FRACTION)),
        note="hard labels; each batch half PGD examples of the copy itself"),
})
# Attacks whose model answers in another label set: cae.fingerprint.verify refuses it,
# verify_transfer counts its matches through the class mapping.
OTHER_TASK = tuple(name for name, attack in REMOVAL_ATTACKS.items() if attack.labels == "transfer")
# Options an attack accepts besides its defaults.
_EXTRA_OPTIONS = {"knockoff": ("knockoff_transfer",), "transfer": ("train_last_only",)}


def attack_list(text: str, what: str = "removal attacks") -> list[str]:
    """Removal attacks named by a command line: ``"all"``, ``"paper"`` (the paper's,
    :data:`PAPER_ATTACKS`), ``"none"`` or a comma-separated list of names. ``what``
    names the option in the error."""
    if text in ("all", "paper", "none"):
        return {"all": list(REMOVAL_ATTACKS), "paper": list(PAPER_ATTACKS), "none": []}[text]
    chosen = [name.strip() for name in str(text).split(",") if name.strip()]
    unknown = [name for name in chosen if name not in REMOVAL_ATTACKS]
    if unknown or not chosen:
        raise ValueError(f"{what} {text!r}: give a comma-separated list of {', '.join(REMOVAL_ATTACKS)}, "
                         "or 'all', 'paper' or 'none'.")
    return chosen


def rows() -> list[dict[str, object]]:
    """The attacks' settings as plain dicts, in the order of Tables V and VI."""
    return [attack.row() for attack in REMOVAL_ATTACKS.values()]


# --------------------------------------------------------------------------- specs
def _check_attack(name):
    if name not in REMOVAL_ATTACKS:
        raise ValueError(f"unknown removal attack {name!r}; choose one of {', '.join(REMOVAL_ATTACKS)}.")
    return REMOVAL_ATTACKS[name]


def removal_spec(name: str, source_spec: zoo.TrainSpec, preset: presets.Preset,
                 **settings) -> zoo.TrainSpec | list[zoo.TrainSpec]:
    """The TrainSpec of removal attack ``name`` applied to the source (a list of n
    member specs for ``"ensemble"``; the last round's spec for ``"papernot"``).

    ``settings`` change the attack's options (e.g. ``jagielski_temperature=0.5``,
    ``papernot_rounds=2``, ``parts=5``, ``knockoff_transfer="imagenet32"``,
    ``prune_fraction=0.3``, ``transfer_mapping=(...)``), its ``learning_rate`` /
    ``epochs``, or, for the attacks that take one, its ``architecture``.
    """
    attack = _check_attack(name)
    allowed = (tuple(k for k, _ in attack.options) + _EXTRA_OPTIONS.get(name, ())
               + (("architecture",) if attack.architecture else ()) + ("learning_rate", "epochs"))
    unknown = sorted(set(settings) - set(allowed))
    if unknown:
        raise ValueError(f"removal attack {name!r} has no setting {', '.join(map(repr, unknown))}; "
                         f"it takes {', '.join(allowed)}.")
    if name == "knockoff" and preset.knockoff_transfer:
        settings.setdefault("knockoff_transfer", preset.knockoff_transfer)
    learning_rate = settings.pop("learning_rate", None)
    epochs = settings.pop("epochs", None)
    architecture = _architecture(name, attack, source_spec, preset, settings.pop("architecture", None))
    if "prune_fraction" in settings:
        settings["prune_fraction"] = checks.fraction("prune_fraction", settings["prune_fraction"], upper=False)
    if "adversarial_fraction" in settings:
        settings["adversarial_fraction"] = checks.fraction("adversarial_fraction", settings["adversarial_fraction"])
    if "transfer_mapping" in settings:
        settings["transfer_mapping"] = tuple(int(v) for v in check_mapping(settings["transfer_mapping"]))
    options = zoo.merge_options(attack.options, **settings)
    if attack.fine_tune:
        learning_rate = learning_rate if learning_rate is not None else attack.learning_rate
        epochs = epochs or preset.finetune_epochs
    else:
        learning_rate = learning_rate if learning_rate is not None else source_spec.learning_rate
        epochs = epochs or preset.epochs_for(architecture, preset.surrogate_epochs)
    base = source_spec.replace(
        architecture=architecture,
        data="D2", labels=attack.labels, parent=source_spec.key, role=name, seed=REMOVAL_SEED + attack.seed_offset,
        init="parent" if attack.fine_tune else "scratch", subset=0, epochs=int(epochs),
        learning_rate=float(learning_rate), temperature=1.0, options=options,
    )
    if attack.fine_tune:
        adversary = source_spec.split[1]
        if preset.finetune_examples > adversary:
            raise ValueError(f"preset.finetune_examples={preset.finetune_examples} is more than the "
                             f"adversary's {adversary} D2 images; use a preset with fewer (e.g. 'smoke') or "
                             "give the adversary more images.")
        base = base.replace(subset=int(preset.finetune_examples))
        if attack.labels == "adversarial":
            base = base.replace(options=zoo.merge_options(
                options, adversarial_examples=int(preset.adversarial_examples)))
    if name == "papernot":
        return papernot_specs(base)[-1]
    if name == "ensemble":
        parts = dict(options)["parts"]
        if isinstance(parts, bool) or not isinstance(parts, int) or parts < 1:
            raise ValueError(f"parts={parts!r} is not allowed; expected a positive int (number of parts of D2).")
        return [base.replace(seed=REMOVAL_SEED + i, options=zoo.merge_options(options, part=i))
                for i in range(parts)]
    return base


def extraction_architectures(source_spec: zoo.TrainSpec, preset: presets.Preset) -> tuple[str, ...]:
    """The architectures ``preset`` lists (its source's, then its groups', in order)
    other than ``source_spec``'s: one model each for ``extract_prob`` / ``extract_label``
    (empty for presets of one architecture, such as ``quick`` and ``smoke``)."""
    from cae import models

    listed = (preset.source_architecture,) + tuple(a for group in presets.GROUPS
                                                   for a in getattr(preset, group))
    out = []
    for architecture in listed:
        if architecture != source_spec.architecture and architecture in models.ARCHITECTURES \
                and architecture not in out:
            out.append(architecture)
    return tuple(out)


def _architecture(name, attack, source_spec, preset, architecture):
    """The derived model's architecture (see RemovalAttack.architecture)."""
    from cae import models

    if not attack.architecture:
        return source_spec.architecture
    if attack.architecture == "any":
        architecture = source_spec.architecture if architecture is None else architecture
        if architecture != zoo.CLONE and architecture not in models.ARCHITECTURES:
            raise ValueError(f"architecture={architecture!r} is not allowed for {name!r}; expected {zoo.CLONE!r} "
                             f"(the source's) or one of {', '.join(models.ARCHITECTURES)}.")
        return architecture
    if architecture is None:
        others = extraction_architectures(source_spec, preset) or tuple(
            a for a in models.ARCHITECTURES if a != source_spec.architecture)
        return others[0]
    if architecture == source_spec.architecture or architecture == zoo.CLONE:
        raise ValueError(f"architecture={architecture!r} is the source's own; {name!r} extracts into another "
                         f"architecture (one of {', '.join(a for a in models.ARCHITECTURES if a != architecture)}); "
                         "use 'retraining' for the source's.")
    if architecture not in models.ARCHITECTURES:
        raise ValueError(f"architecture={architecture!r} is not allowed for {name!r}; expected one of "
                         f"{', '.join(models.ARCHITECTURES)}.")
    return architecture


def papernot_specs(spec: zoo.TrainSpec) -> list[zoo.TrainSpec]:
    """Specs of every round 0..R of a Papernot spec (round R last)."""
    rounds = spec.option("papernot_rounds")
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 0:
        raise ValueError(f"papernot_rounds={rounds!r}; expected an int >= 0.")
    seed_size = spec.subset or max(1, spec.split[1] // 2 ** rounds)
    return [spec.with_options(papernot_rounds=r).replace(subset=seed_size)
            for r in range(rounds + 1)]


# --------------------------------------------------------------------------- attacks
def remove(name: str, source_spec: zoo.TrainSpec, preset: presets.Preset, store: zoo.Zoo, verbose: bool = True,
           **settings) -> keras.Model:
    """Run removal attack ``name`` on the source and return the derived Keras model.

    The source must be trainable or cached in ``store`` (it is loaded, never changed);
    the derived model is trained or loaded from the zoo. ``settings``: see
    :func:`removal_spec`.
    """
    _check_attack(name)
    if name == "ensemble":
        return ensemble_attack(source_spec, preset, store, n=settings.pop("parts", 3), verbose=verbose,
                               **settings)
    spec = removal_spec(name, source_spec, preset, **settings)
    store.get(source_spec, verbose=verbose)
    log.info("removal attack %s on %s -> %s", name, source_spec.key, spec.key)
    return store.get(spec, verbose=verbose)


def remove_model(name: str, source: keras.Model, x_adversary: np.ndarray, *, preset: str | presets.Preset = "quick",
                 architecture: str = zoo.CLONE, test: tuple[np.ndarray, np.ndarray] | None = None,
                 store: zoo.Zoo | None = None, verbose: bool = True, **settings) -> keras.Model:
    """Run removal attack ``name`` on any Keras model and return the derived model.

    :func:`remove` attacks a zoo model; this attacks one the zoo did not train (a
    ``.keras`` file of your own), with the adversary's images:

    ``source``
        A Keras model mapping (N, 32, 32, 3) images in [0, 1] to K class
        probabilities; never changed. It must save and load with ``safe_mode=True``.
    ``x_adversary``
        The adversary's images (uint8, or float32 in [0, 1]): the attack's D2. Every
        attack labels them with the source, as in the paper; no ground truth is needed.
    ``preset``
        A :class:`cae.presets.Preset` (or its name) for the sizes and schedules:
        ``surrogate_epochs`` for extraction, ``finetune_examples`` /
        ``finetune_epochs`` / ``adversarial_examples`` for fine-tuning and adversarial
        training, the batch size, optimiser and learning rate.
    ``architecture``
        For the attacks that train from scratch: ``"clone"`` (the source's own
        architecture, freshly initialised; the paper's surrogates share the source's
        architecture) or a name of :mod:`cae.models`. For ``extract_prob`` /
        ``extract_label``, ``"clone"`` picks the preset's first architecture (the
        source's architecture is not a cae one, so any counts as another).
    ``test``
        ``(x_test, y_test)`` for the derived model's test accuracy (``metrics.json``).
        Without it, the first 1,000 adversary images labelled by the source stand in,
        so "test accuracy" then means agreement with the source.

    The derived model is cached in ``store`` (default: the zoo in ``$CAE_CACHE_DIR``)
    under a spec that names the source's weight hash and the data's hash, so a rerun
    loads it and a killed run resumes. ``settings``: see :func:`removal_spec`.
    """
    _check_attack(name)
    preset = presets.get(preset) if isinstance(preset, str) else preset
    store = store or zoo.Zoo(evaluate_on=preset.evaluate_on or None)
    if REMOVAL_ATTACKS[name].architecture and architecture != zoo.CLONE:
        # An attack with its own architecture setting: the source stays "clone" (its
        # architecture is not a cae one, or not known), the derived model gets this one.
        settings.setdefault("architecture", architecture)
        architecture = zoo.CLONE
    source_spec = external_source(source, x_adversary, store, preset=preset, architecture=architecture, test=test)
    log.info("removal attack %s on external source %s with %d adversary images", name, source_spec.key,
             source_spec.split[1])
    return remove(name, source_spec, preset, store, verbose=verbose, **settings)


def external_source(source: keras.Model, x_adversary: np.ndarray, store: zoo.Zoo, *, preset: presets.Preset,
                    architecture: str = zoo.CLONE, test: tuple[np.ndarray, np.ndarray] | None = None,
                    labels: np.ndarray | None = None, split: tuple[int, int, int] | None = None) -> zoo.TrainSpec:
    """Put a model the zoo did not train into ``store`` as a source, with the images as
    an in-memory dataset; returns the source's spec (see :func:`remove_model` for the
    arguments). The spec names the source's weight hash and the dataset names the
    images' hash, so the same inputs give the same spec.

    By default the images are all D2 and labelled by the source (an adversary's data).
    ``labels`` gives them ground truth instead, and ``split`` = ``(d1, d2, seed)``
    divides them (the owner's data, :func:`cae.experiments.external_context`)."""
    from cae import models

    if architecture != zoo.CLONE and architecture not in models.ARCHITECTURES:
        raise ValueError(f"architecture={architecture!r}; expected {zoo.CLONE!r} (the source's) or one of "
                         f"{', '.join(models.ARCHITECTURES)}.")
    models.check_interface(source, where="the source model")
    num_classes = int(source.output_shape[-1])
    x = _adversary_images(x_adversary, "x_adversary" if labels is None else "x")
    if labels is None:
        y = zoo.predict(source, data.to_float(x)).argmax(axis=1)
    else:
        y = checks.labels("labels", labels, len(x), num_classes)
    if test is None:
        x_test, y_test = x[:1000], y[:1000]
    else:
        x_test = _adversary_images(test[0], "test images")
        y_test = checks.labels("test labels", test[1], len(x_test), num_classes)
    digest = models.arrays_sha256((x, y, x_test, y_test))
    dataset = data.Dataset(f"external-{digest[:16]}", x, y.astype(np.int64), x_test, y_test.astype(np.int64),
                           tuple(str(k) for k in range(num_classes)), digest)
    store.add_dataset(dataset)
    weights = models.weights_sha256(source)
    split = (0, len(x), 0) if split is None else tuple(int(v) for v in split)
    if len(split) != 3 or min(split[:2]) < 0 or split[0] + split[1] > len(x):
        raise ValueError(f"split={split!r} does not fit {len(x)} images; expected (d1, d2, seed) with "
                         "d1 + d2 <= the number of images.")
    spec = zoo.TrainSpec(
        architecture=architecture, dataset=dataset.name, split=split, data="D2" if labels is None else "D1",
        role="source", epochs=1, batch_size=preset.batch_size, learning_rate=preset.learning_rate,
        optimizer=preset.optimizer, augment=preset.augment, options=(("external_weights", weights),),
    )
    if not store.complete(spec):  # the zoo holds the source like a model it trained
        folder = store.folder(spec)
        folder.mkdir(parents=True, exist_ok=True)
        paths.atomic_save(folder / "model.keras", source.save, suffix=".keras")
        paths.atomic_write_json(folder / "spec.json", dataclasses.asdict(spec))
        paths.atomic_write_json(folder / "metrics.json", {"role": "source", "external": True,
                                                          "weights_sha256": weights})
    return spec


def _adversary_images(x, what):
    x = np.asarray(x)
    if x.dtype == np.uint8:
        if x.ndim != 4 or x.shape[1:] != data.IMAGE_SHAPE:
            raise ValueError(f"{what} has shape {x.shape}; expected (N, 32, 32, 3) images (channels last).")
    else:
        x = data.check_images(x, name=what)
    if not len(x):
        raise ValueError(f"{what} holds no images; the attack needs the adversary's data.")
    return x


def ensemble_attack(source_spec: zoo.TrainSpec, preset: presets.Preset, store: zoo.Zoo, n: int = 3,
                    verbose: bool = True, **settings) -> keras.Model:
    """The ensemble attack: one Retraining surrogate per part of D2 (n disjoint parts),
    averaged into one model (see :func:`average_models`)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n={n!r} is not allowed; expected a positive int (number of parts of D2).")
    specs = removal_spec("ensemble", source_spec, preset, parts=n, **settings)
    store.get(source_spec, verbose=verbose)
    members = [store.get(spec, verbose=verbose) for spec in specs]
    return average_models(members, name=f"ensemble_{n}")


def average_models(members: Sequence[keras.Model], name: str = "ensemble") -> keras.Model:
    """One Keras model whose output is the mean of the members' softmax outputs.

    Built from built-in layers (``Average`` over the member sub-models), so it saves as
    ``.keras`` and loads with ``safe_mode=True``. The members are shared, not copied.
    """
    import keras

    from cae import models

    if not members:
        raise ValueError("average_models needs at least one member model.")
    classes = {int(m.output_shape[-1]) for m in members}
    if len(classes) != 1:
        raise ValueError(f"the members predict different numbers of classes {sorted(classes)}; "
                         "average voting needs models of the same task.")
    for i, member in enumerate(members):
        models.check_interface(member, where=f"ensemble member {i}")
    inputs = keras.Input((32, 32, 3), name="image")
    outputs = [keras.Model(m.inputs[0], m.outputs[0], name=f"member_{i}")(inputs) for i, m in enumerate(members)]
    average = keras.layers.Average(name="average")(outputs) if len(outputs) > 1 else outputs[0]
    return models.check_interface(keras.Model(inputs, average, name=name))


# --------------------------------------------------------------------------- labels
def jagielski_labels(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """Jagielski et al.'s soft labels: the softmax M(x) taken as logits, re-tempered by
    T' (paper eq. 4): ``softmax(M(x) / T')``."""
    if not (isinstance(temperature, (int, float)) and not isinstance(temperature, bool)
            and np.isfinite(temperature) and temperature > 0):
        raise ValueError(f"jagielski_temperature={temperature!r} is not allowed; expected a number > 0.")
    logits = np.asarray(probabilities, np.float64) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    out = np.exp(logits)
    return (out / out.sum(axis=1, keepdims=True)).astype(np.float32)


def _hard_labels(probabilities, spec):
    probabilities = np.asarray(probabilities)
    return data.onehot(probabilities.argmax(axis=1), probabilities.shape[1])


def _jagielski_relabel(probabilities, spec):
    return jagielski_labels(probabilities, spec.option("jagielski_temperature", JAGIELSKI_TEMPERATURE))


def _soft_labels(probabilities, spec):
    return np.asarray(probabilities, np.float32)


@zoo.training_set("source_labels", relabel=_hard_labels)
def _source_labels(store, spec, dataset, indices, parent):
    """Fine-tuning: D2 images with the source's hard labels (argmax, one-hot)."""
    x = data.to_float(dataset.x_train[indices])
    labels = store.parent_predictions(spec, dataset, indices, parent).argmax(axis=1)
    return x, data.onehot(labels, dataset.num_classes)


@zoo.training_set("jagielski", relabel=_jagielski_relabel, options=("jagielski_temperature",))
def _jagielski(store, spec, dataset, indices, parent):
    x = data.to_float(dataset.x_train[indices])
    probs = store.parent_predictions(spec, dataset, indices, parent)
    return x, jagielski_labels(probs, spec.option("jagielski_temperature", JAGIELSKI_TEMPERATURE))


@zoo.training_set("knockoff", relabel=_soft_labels, options=("knockoff_transfer",))
def _knockoff(store, spec, dataset, indices, parent):
    transfer = spec.option("knockoff_transfer") or spec.dataset
    budget = len(indices)
    if transfer == spec.dataset:
        images, pool = dataset.x_train, indices
    else:
        if data.share_images(transfer, spec.dataset):
            raise ValueError(f"knockoff_transfer={transfer!r} shares images (test images included) with "
                             f"the source's dataset {spec.dataset!r}; choose a dataset without overlap.")
        other = store.dataset(transfer)
        images, pool = other.x_train, np.arange(len(other.x_train))
    rng = np.random.default_rng(spec.seed)
    chosen = np.sort(rng.choice(pool, size=min(budget, len(pool)), replace=False))
    log.info("knockoff: %d transfer images from %s", len(chosen), transfer)
    x = data.to_float(images[chosen])
    return x, zoo.predict(parent, x).astype(np.float32)


# --------------------------------------------------------------------------- Papernot
def jacobian_sign(model: keras.Model, x: np.ndarray, labels: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """sign(∂ log F_y(x) / ∂x) for each image x and its label y (F = ``model``'s
    softmax, computed from its logits); same sign as Papernot's Jacobian row ∂F_y/∂x."""
    import keras
    from keras import ops

    from cae import models

    x = data.check_images(x)
    logits = models.logits_model(model)
    num_classes = int(logits.output_shape[-1])
    labels = checks.labels("labels", labels, len(x), num_classes)

    if keras.backend.backend() == "jax":
        import jax

        def picked(batch, onehot, trainable, non_trainable):
            outputs, _ = logits.stateless_call(trainable, non_trainable, batch, training=False)
            return ops.sum(ops.log_softmax(outputs, axis=-1) * onehot)

        compiled = jax.jit(jax.grad(picked))

        def gradient(batch, onehot):
            return compiled(batch, onehot, [v.value for v in logits.trainable_variables],
                            [v.value for v in logits.non_trainable_variables])
    else:
        import tensorflow as tf

        @tf.function(reduce_retracing=True, autograph=False)  # straight-line code: nothing to convert
        def gradient(batch, onehot):
            with tf.GradientTape() as tape:
                tape.watch(batch)
                log_probabilities = ops.log_softmax(logits(batch, training=False), axis=-1)
                picked = ops.sum(log_probabilities * onehot)
            return tape.gradient(picked, batch)

    out = np.empty_like(x)
    for start in range(0, len(x), batch_size):
        stop = start + batch_size
        g = gradient(x[start:stop], data.onehot(labels[start:stop], num_classes))
        out[start:stop] = np.sign(ops.convert_to_numpy(g))
    return out


def jacobian_augmentation(model: keras.Model, x: np.ndarray, labels: np.ndarray, lam: float = PAPERNOT_LAMBDA,
                          batch_size: int = 256) -> np.ndarray:
    """Papernot et al.'s new points: clip(x + λ · sign(∂F_y(x)/∂x), 0, 1)."""
    if not (isinstance(lam, (int, float)) and not isinstance(lam, bool) and np.isfinite(lam) and lam > 0):
        raise ValueError(f"papernot_lambda={lam!r} is not allowed; expected a number > 0.")
    step = np.float32(lam) * jacobian_sign(model, x, labels, batch_size)
    return np.clip(x + step, 0.0, 1.0).astype(np.float32)


def _papernot_set(store, spec, dataset, indices, parent):
    rounds = spec.option("papernot_rounds", 0)
    if rounds == 0:
        x = data.to_float(dataset.x_train[indices])
        return x, zoo.predict(parent, x).astype(np.float32)
    previous = spec.with_options(papernot_rounds=rounds - 1)
    x_previous, y_previous = _papernot_set(store, previous, dataset, indices, parent)
    log.info("papernot round %d: substitute %s augments %d points", rounds, previous.key, len(x_previous))
    substitute = store.get(previous)
    x_new = jacobian_augmentation(substitute, x_previous, y_previous.argmax(axis=1),
                                  spec.option("papernot_lambda", PAPERNOT_LAMBDA))
    y_new = zoo.predict(parent, x_new).astype(np.float32)
    return np.concatenate([x_previous, x_new]), np.concatenate([y_previous, y_new])


@zoo.training_set("papernot", relabel=_soft_labels, options=("papernot_lambda", "papernot_rounds"))
def _papernot(store, spec, dataset, indices, parent):
    """Round r's training set S_r: the seed images, augmented r times (see module doc)."""
    return _papernot_set(store, spec, dataset, indices, parent)


# --------------------------------------------------------------------------- adversarial
def adversarial_examples(model: keras.Model, x: np.ndarray, labels: np.ndarray, method: str = "fgm",
                         eps: float = ADVERSARIAL_EPS, eps_step: float = ADVERSARIAL_EPS_STEP,
                         max_iter: int = ADVERSARIAL_MAX_ITER, seed: int = 0, batch_size: int = 128) -> np.ndarray:
    """Untargeted L-inf adversarial examples against ``model`` with ART (FGM, PGD with
    one random start, or IGM = ART's BasicIterativeMethod), moving away from ``labels``."""
    attack, num_classes = evasion_attack(model, method, eps, eps_step, max_iter, batch_size)
    x = data.check_images(x)
    labels = checks.labels("labels", labels, len(x), num_classes)
    return perturb(attack, x, labels, num_classes, eps, seed)


def evasion_attack(model: keras.Model, method: str = "fgm", eps: float = ADVERSARIAL_EPS,
                   eps_step: float = ADVERSARIAL_EPS_STEP, max_iter: int = ADVERSARIAL_MAX_ITER,
                   batch_size: int = 128) -> tuple[EvasionAttack, int]:
    """The ART attack of :func:`adversarial_examples` on ``model``'s logits, and the
    number of classes. The logits model shares ``model``'s weights, so the attack
    follows them while ``model`` trains (adversarial extraction)."""
    import keras

    from cae.attacks import require_tensorflow

    require_tensorflow("adversarial training")
    from art.attacks.evasion import BasicIterativeMethod, FastGradientMethod, ProjectedGradientDescent
    from art.estimators.classification import TensorFlowV2Classifier

    from cae import models

    if method not in ADVERSARIAL_METHODS:
        raise ValueError(f"adversarial_attack={method!r} is not supported; choose one of "
                         f"{', '.join(ADVERSARIAL_METHODS)}.")
    for name, value in (("adversarial_eps", eps), ("adversarial_eps_step", eps_step)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
            raise ValueError(f"{name}={value!r} is not allowed; expected a number in (0, 1].")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"adversarial_max_iter={max_iter!r} is not allowed; expected a positive int.")
    logits = models.logits_model(model)
    num_classes = int(logits.output_shape[-1])
    classifier = TensorFlowV2Classifier(
        model=logits, nb_classes=num_classes, input_shape=(32, 32, 3), clip_values=(0.0, 1.0),
        loss_object=keras.losses.CategoricalCrossentropy(from_logits=True, reduction="sum"),
    )
    common = {"eps": float(eps), "targeted": False, "batch_size": int(batch_size)}
    if method == "fgm":
        return FastGradientMethod(classifier, norm=np.inf, **common), num_classes
    if method == "pgd":
        return ProjectedGradientDescent(classifier, norm=np.inf, eps_step=float(eps_step), max_iter=max_iter,
                                        num_random_init=1, verbose=False, **common), num_classes
    return BasicIterativeMethod(classifier, eps_step=float(eps_step), max_iter=max_iter, verbose=False,
                                **common), num_classes


def perturb(attack: EvasionAttack, x: np.ndarray, labels: np.ndarray, num_classes: int, eps: float,
            seed: int = 0) -> np.ndarray:
    """``attack``'s examples of float images ``x`` away from int ``labels``, inside the
    ε-ball (L-inf) and [0, 1]; ART's random starts seeded by ``seed``."""
    if len(x) == 0:
        return x.copy()
    from cae.attacks import _numpy_seed  # ART draws random starts from NumPy's global RNG

    with _numpy_seed(seed):
        x_adv = attack.generate(x, y=data.onehot(labels, num_classes))
    # Guard against float rounding just outside the ε-ball or [0, 1].
    return np.clip(np.clip(x_adv, x - eps, x + eps), 0.0, 1.0).astype(np.float32)


@zoo.training_set("adversarial", options=_ADVERSARIAL_OPTIONS + ("adversarial_examples",))
def _adversarial_set(store, spec, dataset, indices, parent):
    """Fine-tuning set (source's hard labels) plus adversarial examples of random inputs
    of it, crafted against the source and labelled with its label of the clean input."""
    x, y = _source_labels(store, spec, dataset, indices, parent)
    count = int(spec.option("adversarial_examples", 0))
    if not 0 <= count <= len(x):
        raise ValueError(f"adversarial_examples={count} is more than the {len(x)} fine-tuning inputs; "
                         "lower preset.adversarial_examples or raise preset.finetune_examples.")
    pick = np.sort(np.random.default_rng(spec.seed).choice(len(x), size=count, replace=False))
    method = spec.option("adversarial_attack", "fgm")
    log.info("adversarial training: %d %s examples", count, method.upper())
    x_adv = adversarial_examples(
        parent, x[pick], y[pick].argmax(axis=1), method, eps=spec.option("adversarial_eps", ADVERSARIAL_EPS),
        eps_step=spec.option("adversarial_eps_step", ADVERSARIAL_EPS_STEP),
        max_iter=spec.option("adversarial_max_iter", ADVERSARIAL_MAX_ITER), seed=spec.seed,
    )
    return np.concatenate([x, x_adv]), np.concatenate([y, y[pick]])


# --------------------------------------------------------------------------- pruning
_PRUNABLE = ("Conv1D", "Conv2D", "Conv3D", "Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose",
             "DepthwiseConv2D", "Dense")


def _kernel_layers(model):
    """The convolution and dense layers of ``model`` (nested models included), in order."""
    import keras

    kinds = tuple(getattr(keras.layers, kind) for kind in _PRUNABLE if hasattr(keras.layers, kind))
    out = []
    for layer in model.layers:
        if isinstance(layer, kinds):
            out.append(layer)
        elif hasattr(layer, "layers"):
            out.extend(_kernel_layers(layer))
    return out


def prune_masks(model: keras.Model, fraction: float) -> list[np.ndarray]:
    """Global magnitude pruning: for each convolution or dense layer of ``model`` (in
    layer order), a float32 0/1 mask of its kernel's shape, zero at the ``ceil(fraction
    · n)`` weights of smallest absolute value among all n kernel weights (ties: the
    earlier weight in layer order first). ``model`` is not changed."""
    fraction = checks.fraction("prune_fraction", fraction, upper=False)
    kernels = [np.asarray(layer.kernel) for layer in _kernel_layers(model)]
    if not kernels:
        raise ValueError(f"model {model.name!r} has no convolution or dense kernels to prune.")
    magnitudes = np.concatenate([np.abs(k).ravel() for k in kernels])
    keep = np.ones(len(magnitudes), np.float32)
    keep[np.argsort(magnitudes, kind="stable")[: int(np.ceil(fraction * len(magnitudes)))]] = 0.0
    masks, start = [], 0
    for kernel in kernels:
        masks.append(keep[start:start + kernel.size].reshape(kernel.shape))
        start += kernel.size
    return masks


def pruned_fraction(model: keras.Model) -> float:
    """The fraction of ``model``'s convolution and dense kernel weights that are zero."""
    kernels = [np.asarray(layer.kernel) for layer in _kernel_layers(model)]
    return float(sum(np.sum(k == 0) for k in kernels) / sum(k.size for k in kernels))


def _mask_pairs(model, parent, spec):
    """(kernel variable of ``model``, mask from ``parent``'s weights) pairs."""
    import keras

    layers = _kernel_layers(model)
    masks = prune_masks(parent, spec.option("prune_fraction"))
    if len(layers) != len(masks) or any(tuple(l.kernel.shape) != m.shape for l, m in zip(layers, masks)):
        raise ValueError("the pruned model's kernels do not match its parent's; it must be the parent's copy.")
    return [(layer.kernel, keras.ops.convert_to_tensor(mask)) for layer, mask in zip(layers, masks)]


def _apply_masks(pairs):
    for variable, mask in pairs:
        variable.assign(variable * mask)


def _prune_build(store, spec, dataset, x, parent):
    """The parent's copy with the mask applied (the mask is computed from the parent)."""
    import keras

    model = keras.models.clone_model(parent)
    model.set_weights(parent.get_weights())
    _apply_masks(_mask_pairs(model, parent, spec))
    return model


def _prune_fit(store, spec, model, x, y, parent, epoch):
    """One epoch of fine-tuning, the mask re-applied after every batch."""
    import keras

    pairs = _mask_pairs(model, parent, spec)

    class KeepPruned(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            _apply_masks(pairs)

        def on_train_batch_end(self, batch, logs=None):
            _apply_masks(pairs)

    history = model.fit(x, y, batch_size=spec.batch_size, epochs=1, shuffle=False, verbose=0,
                        callbacks=[KeepPruned()])
    return history.history["loss"][-1]


@zoo.training_set("prune", relabel=_hard_labels, options=("prune_fraction",), build=_prune_build, fit=_prune_fit)
def _prune_set(store, spec, dataset, indices, parent):
    """Fine-pruning: the fine-tuning set of FTAL (D2 images, the source's hard labels)."""
    return _source_labels(store, spec, dataset, indices, parent)


# --------------------------------------------------------------------------- transfer learning
def check_mapping(mapping: Sequence[int] | np.ndarray, num_classes: int | None = None) -> np.ndarray:
    """A class mapping (one task class per source class) as an int64 array, checked:
    integers 0..k-1, each used, k >= 2; ``num_classes`` entries when given."""
    values = np.asarray(mapping) if not isinstance(mapping, (str, bytes)) else np.asarray([])
    fix = ("give one task class per source class, numbered 0..k-1 with k >= 2, e.g. "
           f"transfer_mapping={TRANSFER_MAPPING} for CIFAR-10's classes")
    if values.ndim != 1 or not np.issubdtype(values.dtype, np.integer) or values.dtype == bool or len(values) < 2:
        raise ValueError(f"transfer_mapping={mapping!r} is not a list of class indices; {fix}.")
    if values.min() != 0 or set(values.tolist()) != set(range(int(values.max()) + 1)) or values.max() < 1:
        raise ValueError(f"transfer_mapping={mapping!r} does not use every task class 0..{values.max()} "
                         f"(or has fewer than 2); {fix}.")
    if num_classes is not None and len(values) != num_classes:
        raise ValueError(f"transfer_mapping has {len(values)} entries but the source has {num_classes} classes; "
                         f"{fix}.")
    return values.astype(np.int64)


def task_mapping(attack_or_spec: str | zoo.TrainSpec, **settings) -> np.ndarray | None:
    """The class mapping of a transfer-learning attack (its name, with ``settings``, or
    a derived model's TrainSpec), or None for an attack that keeps the source's task."""
    if isinstance(attack_or_spec, zoo.TrainSpec):
        mapping = attack_or_spec.option("transfer_mapping") if attack_or_spec.labels == "transfer" else None
    else:
        attack = _check_attack(attack_or_spec)
        mapping = settings.get("transfer_mapping", dict(attack.options).get("transfer_mapping"))
    return None if mapping is None else check_mapping(mapping)


def _task(spec, dataset):
    return check_mapping(spec.option("transfer_mapping", TRANSFER_MAPPING), dataset.num_classes)


def _transfer_build(store, spec, dataset, x, parent):
    """The parent's layers up to the input of its ``logits`` layer (copied, with their
    weights) under a new ``logits`` Dense layer of the task's classes and a softmax."""
    import keras

    from cae import models

    classes = int(_task(spec, dataset).max()) + 1
    copy = keras.models.clone_model(parent)
    copy.set_weights(parent.get_weights())
    features = models.last_layer(copy).input
    keras.utils.set_random_seed(spec.seed)  # the new head is part of the spec
    logits = keras.layers.Dense(classes, name="logits")(features)
    probabilities = keras.layers.Activation("softmax", name="probabilities")(logits)
    return keras.Model(copy.inputs, probabilities, name=f"{copy.name}_transfer")


@zoo.training_set("transfer", options=("transfer_mapping",), build=_transfer_build, task=_task)
def _transfer_set(store, spec, dataset, indices, parent):
    """Transfer learning: D2 images with their ground-truth labels mapped to the task's."""
    mapping = _task(spec, dataset)
    x = data.to_float(dataset.x_train[indices])
    return x, data.onehot(mapping[dataset.y_train[indices]], int(mapping.max()) + 1)


def map_fingerprint(fp: fingerprint.Fingerprint, mapping: Sequence[int] | np.ndarray = TRANSFER_MAPPING,
                    ) -> fingerprint.Fingerprint:
    """``fp`` in a transferred model's label space: every key t becomes ``mapping[t]``
    (targets likewise); the same inputs. The manifest's ``num_classes`` becomes the
    task's, it records ``label_mapping`` and ``mapped_from`` (``fp``'s sha256), and the
    calibration is dropped (it is of the source's label space; see the module doc)."""
    if not isinstance(fp, fingerprint.Fingerprint):
        raise TypeError(f"fp must be a Fingerprint (see cae.fingerprint.load), got {type(fp).__name__}.")
    mapping = check_mapping(mapping, fp.num_classes)
    manifest = {k: v for k, v in fp.manifest.items() if k != "calibration"}
    manifest.update(num_classes=int(mapping.max()) + 1, label_mapping=mapping.tolist(), mapped_from=fp.sha256)
    return fingerprint.Fingerprint(x=fp.x, keys=mapping[fp.keys], manifest=manifest, originals=fp.originals,
                                   targets=None if fp.targets is None else mapping[fp.targets])


def verify_transfer(suspect: keras.Model | Callable, fp: fingerprint.Fingerprint,
                    mapping: Sequence[int] | np.ndarray = TRANSFER_MAPPING, threshold: float | None = None,
                    batch_size: int = 256) -> fingerprint.VerifyResult:
    """:func:`cae.fingerprint.verify` of a suspect that answers in a task's label space
    (transfer learning), through ``mapping``: its ``retention`` and ``matches`` count the
    keys t it answers with ``mapping[t]``. Without a calibration for that label space,
    the verdict is the paper's rule alone (θ = ``threshold``, default
    :data:`cae.fingerprint.DEFAULT_THRESHOLD`) and there is no p-value."""
    return fingerprint.verify(suspect, map_fingerprint(fp, mapping), threshold=threshold, batch_size=batch_size)


# --------------------------------------------------------------------------- adversarial extraction
def _adversarial_extraction_fit(store, spec, model, x, y, parent, epoch):
    """One epoch of adversarial extraction: in each batch the first ``adversarial_fraction``
    of the images become adversarial examples of ``model`` itself (its weights at that
    step), labelled with the source's label of the clean image."""
    eps = spec.option("adversarial_eps", ADVERSARIAL_EPS)
    fraction = checks.fraction("adversarial_fraction", spec.option("adversarial_fraction", ADVERSARIAL_FRACTION))
    attack, num_classes = evasion_attack(
        model, spec.option("adversarial_attack", "pgd"), eps,
        spec.option("adversarial_eps_step", ADVERSARIAL_EPS_STEP),
        spec.option("adversarial_max_iter", ADVERSARIAL_MAX_ITER), batch_size=spec.batch_size)
    losses = []
    for step, start in enumerate(range(0, len(x), spec.batch_size)):
        xb, yb = x[start:start + spec.batch_size], y[start:start + spec.batch_size]
        n = int(round(fraction * len(xb)))
        if n:
            seed = int(np.random.default_rng([spec.seed, epoch, step]).integers(2**31))
            xb = np.concatenate([perturb(attack, xb[:n], yb[:n].argmax(axis=1), num_classes, eps, seed), xb[n:]])
        losses.append(float(model.train_on_batch(xb, yb, return_dict=True)["loss"]))
    return float(np.mean(losses))


@zoo.training_set("adversarial_extraction", relabel=_hard_labels,
                  options=_ADVERSARIAL_OPTIONS + ("adversarial_fraction",), fit=_adversarial_extraction_fit)
def _adversarial_extraction_set(store, spec, dataset, indices, parent):
    """Adversarial extraction: all of D2 with the source's hard labels; the adversarial
    half of each batch is made while training (:func:`_adversarial_extraction_fit`)."""
    return _source_labels(store, spec, dataset, indices, parent)


@zoo.training_set("adversarial_ground_truth", options=_ADVERSARIAL_OPTIONS + ("adversarial_fraction",),
                  fit=_adversarial_extraction_fit)
def _adversarial_ground_truth(store, spec, dataset, indices, parent):
    """A robust C-IGM reference's training set (:func:`cae.experiments.robust_member_specs`):
    the ground truth of its images; the adversarial half of each batch is made while it
    trains (the fit hook of adversarial extraction)."""
    x = data.to_float(dataset.x_train[indices])
    return x, data.onehot(dataset.y_train[indices], dataset.num_classes)
