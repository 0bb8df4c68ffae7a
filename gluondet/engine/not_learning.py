"""A run that does not learn is called out: the decision, the causes gluondet can check, the hook.

A user trained mask_rcnn_tiny on data it was not tuned for: the losses settled where a network that
learned nothing sits, validation mask AP stayed at 0.001, and the run ended "done" with exit 0.
``NotLearning`` reads the committed history after every epoch. When ``not_learning`` says the run
does not learn, it prints one warning block with the likely causes it finds, and writes
``RUN/diagnosis.json``, which the report page shows at its top.

The causes are facts gluondet can compute itself: the lr against the model recipe's, the objects'
size at the network's input, the share of boxes no anchor matches, one class swamping the others.
Each check is a pure function returning one sentence, or None when it finds nothing.
"""
import warnings
from collections import Counter

import numpy as np

from ..data.base import FLAG_CROWD
from ..families import family_of
from ..models import build_model
from ..models.anchors import anchor_corners, best_iou
from ..run_folder import DIAGNOSIS_FILE, RunFolderError, read_json, write_json
from ..progress import say
from .trainer import HookBase

# The decision (``not_learning``); the figures behind each threshold are in its docstring.
FLOOR = 0.02            # a best validation score under this is "near zero"
MIN_VALIDATIONS = 2     # validations before a verdict (1 at the end of training)
LOSS_WINDOW = 2         # epochs over which the training loss must have stopped falling
FLAT_DROP = 0.05        # the loss fell less than this fraction over the window: flat

# The causes
LR_HIGH, LR_LOW = 2.0, 0.2   # lr against the recipe's (scaled to the batch size)
LOSS_ROSE = 0.10             # the last epoch's loss this much above the run's lowest: it rose
SMALL_PX = 8                 # objects under this many input pixels (sqrt of the box area)
ANCHOR_IOU = 0.5             # SSD's positive-match IoU (gluondet.data.loader.SSD_IOU_THRESH)
UNMATCHED_SHARE = 0.25       # boxes without an anchor at ANCHOR_IOU, as a share of all
DOMINANT_SHARE = 0.90        # one class's share of the objects
MAX_IMAGES = 500             # images the geometry checks read (evenly spaced): a second, not minutes
ANCHOR_SIZES = 4             # input sizes whose anchors are computed (a feature-extractor forward each)


def loss_totals(history, loss_names):
    """[(epoch, sum of the losses)] of the history rows that carry every loss."""
    return [(row["epoch"], float(sum(row[n] for n in loss_names))) for row in history
            if all(row.get(n) is not None for n in loss_names)]


def not_learning(history, loss_names, final=False):
    """The evidence that the run does not learn (a JSON-ready dict), or None.

    ``history``: the trainer's per-epoch rows (``TrainState.history``: ``epoch``, each loss's epoch
    mean, ``val_map`` when it validated). Not learning means all of:

    - at least ``MIN_VALIDATIONS`` validations (``final``: the last epoch of the run, 1 will do);
    - the best ``val_map`` so far is under ``FLOOR``;
    - the total training loss fell less than ``FLAT_DROP`` of itself over the last ``LOSS_WINDOW``
      epochs (or as many as there are after the first), or rose.

    Why these, measured with the tiny SSD on the shapes demo (seed 0, validated every epoch;
    tests/unit/test_not_learning.py keeps both histories). Healthy, at the recipe's lr 0.05: VOC mAP
    0.028 after epoch 1 and 0.16 after epoch 2, total loss 7.43, 5.43, 4.41, 4.01, 3.79 (over 2
    epochs it fell 41%, 26%, 14%). Stalled, at lr 0.15 (the YAML notes 0.1 and 0.15 stalling at
    all-background): mAP 0.012, 0.0025, 0.0017, 0.0027, loss 7.55, 5.59, 5.49, 5.46, which is 2.2%
    over epochs 2-4: it is called out at epoch 4, not at 2 (one validation then would have called
    out the healthy run too, had its first score been under the floor) nor at 3 (the first epoch's
    loss falls from where the random start puts it). 0.02 is under both healthy scores we saw at
    the end of an epoch and far above the 0.001 of the run that prompted this. At the end of a run
    there is no later validation to wait for. A run whose best score ever reaches FLOOR is left alone.
    """
    scores = [(row["epoch"], row["val_map"]) for row in history if row.get("val_map") is not None]
    if not scores or len(scores) < (1 if final else MIN_VALIDATIONS):
        return None
    best_epoch, best = max(scores, key=lambda s: s[1])
    totals = loss_totals(history, loss_names)
    if best >= FLOOR or len(totals) < 2:
        return None
    window = min(LOSS_WINDOW, len(totals) - 1)
    (first_epoch, first), (last_epoch, last) = totals[-1 - window], totals[-1]
    drop = (first - last) / first if first > 0 else 0.0
    if drop >= FLAT_DROP:
        return None
    return {"epoch": history[-1]["epoch"], "best_map": best, "best_epoch": best_epoch,
            "validations": len(scores), "loss_names": list(loss_names),
            "loss_from": {"epoch": first_epoch, "total": first},
            "loss_to": {"epoch": last_epoch, "total": last}, "loss_drop": drop}


def summary(verdict, metric_label="mAP"):
    """One sentence of what ``not_learning`` found."""
    a, b = verdict["loss_from"], verdict["loss_to"]
    drop = verdict["loss_drop"]
    change = (f"fell {drop:.1%}" if drop >= 0.0005 else f"rose {-drop:.1%}" if drop <= -0.0005 else
              "stayed flat")
    return (f"the run is not learning: best validation {metric_label} {verdict['best_map']:.4f} (epoch "
            f"{verdict['best_epoch']}) after {verdict['validations']} validation(s), while the training "
            f"loss ({' + '.join(verdict['loss_names'])}) {change} from epoch {a['epoch']} to {b['epoch']} "
            f"({a['total']:.4g} -> {b['total']:.4g})")


# ----------------------------------------------------------------------------- the causes
def lr_cause(lr, batch_size, recipe, totals, model_name="the model"):
    """The lr, if it looks like a cause: against the model recipe's (``recipe``: the model YAML's
    ``train:`` section), scaled linearly to this batch size when the recipe names its own (the
    linear scaling rule: gradients are means over the batch); and a training loss that rose
    (``totals``: ``loss_totals``), the mark of too high a rate. A sentence, or None."""
    parts, advice = [], None
    recipe = recipe or {}
    if recipe.get("lr"):
        expected = float(recipe["lr"])
        base = f"the recipe lr of {model_name} ({expected:g}"
        if recipe.get("batch_size") and batch_size and int(recipe["batch_size"]) != int(batch_size):
            expected *= batch_size / float(recipe["batch_size"])
            base += f" at batch {recipe['batch_size']}, so {expected:.3g} at batch {batch_size}"
        base += ")"
        ratio = lr / expected
        if ratio >= LR_HIGH:
            parts.append(f"--lr {lr:g} is {_factor(ratio)}x {base}; too high a rate can settle a detector on "
                         f"predicting only background")
        elif ratio <= LR_LOW:
            parts.append(f"--lr {lr:g} is 1/{_factor(1 / ratio)} of {base}: the weights barely move")
        if ratio >= LR_HIGH or ratio <= LR_LOW:
            advice = f"try --lr {expected:.3g}"
    if len(totals) >= 2:
        low_epoch, low = min(totals[:-1], key=lambda t: t[1])
        last_epoch, last = totals[-1]
        if last > low * (1 + LOSS_ROSE):
            parts.append(f"the training loss rose from {low:.4g} (epoch {low_epoch}) to {last:.4g} "
                         f"(epoch {last_epoch}), the mark of too high a rate")
            advice = advice or "try a lower --lr or a longer --warmup-epochs"
    if not parts:
        return None
    return f"learning rate: {'; '.join(parts)}; {advice}"


def _factor(x):
    """3, 2.5, 40, 5,000: a ratio as people write it (not 5e+03)."""
    return f"{x:,.0f}" if x >= 10 else f"{x:.2g}"


def small_objects_cause(sizes, resize):
    """Objects too small at the network's input: ``sizes`` are sqrt(w * h) of each box in input
    pixels, ``resize`` says how images are resized. Fires when the median is under ``SMALL_PX``:
    a box of a few pixels covers less than one cell of the finest feature map of the zoo's
    detectors (stride 8 and up), so there is little left to recognise."""
    sizes = np.asarray(sizes, dtype=np.float64)
    if not sizes.size or np.median(sizes) >= SMALL_PX:
        return None
    return (f"small objects: with {resize}, the median object is {np.median(sizes):.1f} px "
            f"(sqrt of the box area) and {np.mean(sizes < SMALL_PX):.0%} are under {SMALL_PX} px; "
            f"use a larger --data-shape, or crop the images into tiles")


def unmatched_cause(ious):
    """Anchors that fit no object: ``ious`` are each training box's best IoU with any anchor. Fires
    when at least ``UNMATCHED_SHARE`` of the boxes have none at ``ANCHOR_IOU``: each of them trains
    only through its one closest anchor (SSD's bipartite match, the RPN's best-anchor rule), so
    the network learns little about them."""
    ious = np.asarray(ious, dtype=np.float64)
    if not ious.size:
        return None
    share = float(np.mean(ious < ANCHOR_IOU))
    if share < UNMATCHED_SHARE:
        return None
    return (f"anchors: {share:.0%} of {ious.size} training boxes overlap no anchor by IoU {ANCHOR_IOU:g} "
            f"or more (median best IoU {np.median(ious):.2f}), so the anchors' sizes or shapes do not "
            f"fit these objects; see them with gluondet detect --show-anchors, or choose a model (or "
            f"--data-shape) whose anchors fit")


def imbalance_cause(counts):
    """One class swamping the others: ``counts`` maps class name -> training objects. Fires when one
    class holds ``DOMINANT_SHARE`` of them (with two classes or more): a network can then score well
    on the loss by ignoring the rest, and mAP averages over the classes."""
    total = sum(counts.values())
    if len(counts) < 2 or not total:
        return None
    name, count = max(counts.items(), key=lambda item: item[1])
    if count < DOMINANT_SHARE * total:
        return None
    others = ", ".join(f"{n} {c}" for n, c in sorted(counts.items(), key=lambda i: -i[1]) if n != name)
    return (f"class imbalance: '{name}' has {count / total:.0%} of the {total} training objects "
            f"(the others: {others}); collect or weight more of the others")


def class_counts(dataset):
    """{class name: training objects} over every image's label (crowd regions left out: they train
    nothing)."""
    counts = Counter()
    for i in range(len(dataset)):
        label = dataset.label(i)
        counts.update(int(c) for c in label[label[:, 5] != FLAG_CROWD, 4])
    return {name: counts.get(k, 0) for k, name in enumerate(dataset.classes)}


def sampled_boxes(dataset, max_images=MAX_IMAGES):
    """[((w, h) of the image, (N, 4) boxes without crowd rows)] of at most ``max_images`` images,
    evenly spaced through the dataset (images without objects left out)."""
    n = len(dataset)
    picked = np.unique(np.linspace(0, n - 1, min(n, max_images)).round().astype(int)) if n else []
    out = []
    for i in picked:
        label = dataset.label(int(i))
        boxes = label[label[:, 5] != FLAG_CROWD, :4]
        if len(boxes):
            out.append((tuple(dataset.image_size(int(i))), boxes))
    return out


def geometry_causes(samples, family, data_shape, net=None, max_size=None):
    """The small-objects and anchor causes of ``samples`` (``sampled_boxes``) resized as ``family``
    resizes them. The anchor check needs the network (``anchor_corners``) and one feature-extractor
    forward per input size, so it covers the images of the ``ANCHOR_SIZES`` most common input sizes
    (SSD has one; R-CNN keeps each image's aspect ratio). Returns the sentences found (maybe none)."""
    resized = []
    for (w, h), boxes in samples:
        nw, nh = family.input_size(w, h, data_shape, max_size)
        resized.append(((nw, nh), boxes * np.array([nw / w, nh / h, nw / w, nh / h])))
    sizes = [np.sqrt(np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None))
             for _, b in resized]
    ious = []
    if net is not None:
        common = Counter(size for size, _ in resized).most_common(ANCHOR_SIZES)
        anchors = {size: anchor_corners(net, family, *size) for size, _ in common}
        ious = [best_iou(b, anchors[size]) for size, b in resized if anchors.get(size) is not None]
    resize = family.describe_resize(data_shape, max_size)
    found = [small_objects_cause(np.concatenate(sizes) if sizes else [], resize),
             unmatched_cause(np.concatenate(ious)) if ious else None]
    return [c for c in found if c]


def network_geometry(model_cfg, classes):
    """A fresh, untrained network of the run's model (its anchors are constants of the model, not of
    the weights) and its R-CNN ``max_size``: the training network is left alone, since a forward
    of another shape would re-trace its hybridized graph and its parameters may live on GPUs."""
    with warnings.catch_warnings():
        # an FPN backbone is a SymbolBlock: MXNet warns that it cannot infer the dtype of its input
        warnings.filterwarnings("ignore", message="Cannot decide type")
        net = build_model(model_cfg, classes, pretrained_base=False)
    return net, getattr(net, "max_size", None)


# ----------------------------------------------------------------------------- the hook
class NotLearning(HookBase):
    """Call out a run that does not learn, once: a warning block with the likely causes, and
    ``RUN/diagnosis.json`` (the verdict, its summary and causes) for the report page.

    Goes after ``Checkpointer`` in the hook order: it reads the row Checkpointer appends to
    ``state.history``, and writes its file only once that epoch is committed (a kill in between
    leaves no diagnosis of an epoch a resume will train again). ``model_cfg`` is the resolved model
    config (family, data_shape, the ``train:`` recipe), ``dataset`` the training set, ``lr`` and
    ``batch_size`` the run's (the batch over all workers: the gradient is a mean over it).

    A verdict is kept for the rest of the run (a resumed run reads its diagnosis.json back); should
    the best score reach ``FLOOR`` later (a stalled run taking off after an lr step), the file is
    removed and the run says so.
    """

    def __init__(self, run, model_cfg, dataset, lr, batch_size, metric_label="mAP"):
        self.run, self.model_cfg, self.dataset = run, model_cfg, dataset
        self.lr, self.batch_size, self.metric_label = lr, batch_size, metric_label
        self.verdict = None
        self.said_at = None  # the epoch whose after_epoch printed the block

    @property
    def path(self):
        return self.run.path / DIAGNOSIS_FILE

    def before_train(self):
        try:
            self.verdict = read_json(self.path) if self.path.is_file() else None
        except RunFolderError:
            self.verdict = None  # damaged: judged afresh, and rewritten if it still holds

    def after_epoch(self):
        state, epochs = self.trainer.state, self.trainer.epochs
        if not state.history or state.history[-1]["epoch"] != state.epoch + 1:
            raise RuntimeError("NotLearning must come after Checkpointer: it reads the committed row")
        if self.verdict is not None:
            self._retract_if_learned()
            return
        final = state.epoch + 1 >= epochs or state.stop_reason == "early-stop"
        verdict = not_learning(state.history, self.trainer.step.loss_names, final=final)
        if verdict is None:
            return
        verdict["metric"] = self.metric_label
        verdict["summary"] = summary(verdict, self.metric_label)
        verdict["causes"] = self.causes(state.history)
        write_json(self.path, verdict)
        self.verdict, self.said_at = verdict, state.epoch + 1
        say(warning_block(verdict, self.path))

    def causes(self, history):
        """The likely causes' sentences (``lr_cause``, ``geometry_causes``, ``imbalance_cause``)."""
        cfg = self.model_cfg
        totals = loss_totals(history, self.trainer.step.loss_names)
        found = [lr_cause(self.lr, self.batch_size, cfg.get("train"), totals, cfg.get("name", "the model"))]
        net, max_size = network_geometry(cfg, self.dataset.classes)
        found += geometry_causes(sampled_boxes(self.dataset), family_of(cfg), cfg.get("data_shape"),
                                 net, max_size)
        found.append(imbalance_cause(class_counts(self.dataset)))
        return [c for c in found if c]

    def _retract_if_learned(self):
        state = self.trainer.state
        if state.best_map is None or state.best_map < FLOOR:
            return
        self.path.unlink(missing_ok=True)
        self.verdict = self.said_at = None
        say(f"epoch {state.epoch + 1}: best {self.metric_label} {state.best_map:.4f}: the run learns after "
            f"all; removed {DIAGNOSIS_FILE}")

    def on_rollback(self):
        """A rollback to before the verdict's epoch (engine/divergence.py) trains those epochs again:
        the verdict was about a timeline that is gone."""
        if self.verdict is not None and self.verdict.get("epoch", 0) > self.trainer.state.epoch:
            self.path.unlink(missing_ok=True)
            self.verdict = self.said_at = None

    def after_train(self):
        last = self.trainer.state.history[-1]["epoch"] if self.trainer.state.history else None
        best = self.trainer.state.best_map
        if self.verdict is not None and self.said_at != last and best is not None:
            say(f"warning: the run did not learn: best {self.metric_label} {best:.4f}; the likely causes "
                f"found at epoch {self.verdict['epoch']} are in {self.path}")


def warning_block(verdict, path):
    """The lines printed once when a run is found not learning."""
    lines = [f"warning: {verdict['summary']}"]
    if verdict["causes"]:
        lines.append("  likely causes gluondet can check:")
        lines += [f"  - {cause}" for cause in verdict["causes"]]
    else:
        lines.append("  gluondet's checks found no cause (lr against the recipe, object size at the input, "
                     "anchor fit, class balance); look at the labels with gluondet data show")
    lines.append(f"  (written to {path}; the report page shows it)")
    return "\n".join(lines)
