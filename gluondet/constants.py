"""Names and numbers several modules share, kept once (importing this costs nothing: no MXNet).

The CLI builds its ``click.Choice`` lists from these; config.py validates against them; the
modules that implement each name (gluondet.eval.METRIC_CLASSES, gluondet.data.loader) are tested to
cover exactly these names. Facts with one obvious owner live in it instead: image suffixes and
the reading policy in gluondet.image, label flags in gluondet.data.base.
"""

# Validation metrics (--metric) and how reports name them: box metrics (gluondet.eval.METRIC_CLASSES)
# and the mask family's (which COCO AP picks best.params; gluondet.eval.instance scores both).
METRIC_LABELS = {"voc": "VOC mAP (area)", "voc07": "VOC07 mAP (11-point)", "coco": "COCO mAP@[.5:.95]",
                 "coco_segm": "COCO mask AP@[.5:.95]", "coco_bbox": "COCO box AP@[.5:.95]"}
BOX_METRICS = ("voc", "voc07", "coco")
MASK_METRICS = ("coco_segm", "coco_bbox")
METRICS = BOX_METRICS + MASK_METRICS

# SSD training augmentation (--augment): GluonCV's (colour, expand, crop, flip), or resize + flip.
AUGMENTATIONS = ("ssd", "flip")

# Gradient aggregation (--kvstore): one machine, dist_* across the processes of gluondet launch
# (MXNet's parameter server), or horovod across the processes of horovodrun (ring-allreduce).
KVSTORES = ("device", "local", "dist_sync", "dist_device_sync", "dist_async", "horovod")

# Export formats (gluondet export --format) and how launch starts processes (--launcher).
EXPORT_FORMATS = ("mxnet", "onnx")
LAUNCHERS = ("local", "ssh")

# ImageNet normalisation every zoo backbone was trained with (RGB, on [0, 1] pixels).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# What the divergence guard does when a run keeps diverging (--on-diverge; gluondet.engine.divergence):
# roll back to the last commit with the lr halved, stop with one line, or warn and go on.
ON_DIVERGE = ("rollback", "stop", "warn")
MAX_ROLLBACKS = 5  # --max-rollbacks' default: 5 halvings bring an lr 40x too high within 1.25x

# The lr schedule after the warm-up (--lr-mode; gluondet.engine.schedule): decay by --lr-decay at
# epochs, or anneal to 0 per iteration along a half cosine or a polynomial (GluonCV's LRScheduler).
LR_MODES = ("step", "cosine", "poly")

# The optimizer (--optimizer; engine/train.py make_optimizer): SGD with momentum, or Adam, what
# GluonCV's train_center_net.py trains CenterNet with (--momentum is SGD's alone).
OPTIMIZERS = ("sgd", "adam")
