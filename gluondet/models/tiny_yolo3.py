"""The tiny YOLOv3: a small GluonCV YOLOv3 that learns the shapes demo data in minutes on 2 CPU cores.

GluonCV's smallest zoo YOLOv3 (``yolo3_mobilenet0.25_custom``) keeps the zoo's detection heads
(256/128/128 channels, 3x3 convolutions at twice that width), which cost several times the
MobileNet-0.25 backbone itself: 6.2M parameters against 1.4M here, and it trained at 11.4 img/s
against this network's 37.2 (256 px, batch 8, one thread, the network step alone). This network
is a plain ``gluoncv.model_zoo.yolo.YOLOV3``
(same outputs, losses, target generators, ``set_nms``, ``reset_class`` as the zoo's) on a small
Darknet-style backbone built from GluonCV's own Darknet cells (3x3 stride-2 convolution, then
residual 1x1/3x3 blocks, BatchNorm and leaky ReLU), with narrow heads. Its anchors are GluonCV's
nine COCO anchors scaled from the 416 px input they were made for to this network's ``data_shape``.
"""
from mxnet.gluon import nn
from mxnet.gluon.nn import BatchNorm

from gluoncv.model_zoo.yolo.darknet import DarknetBasicBlockV3, _conv2d
from gluoncv.model_zoo.yolo.yolo3 import YOLOV3

# Channels after each stride-2 step (strides 2 .. 32) and the residual blocks that follow it.
STAGE_CHANNELS = (16, 32, 64, 128, 256)
STAGE_BLOCKS = (0, 1, 1, 1, 1)
# Detection-block channels, deepest (stride 32) first, as YOLOV3 takes them.
HEAD_CHANNELS = (64, 48, 32)
STRIDES = (8, 16, 32)
# GluonCV's YOLOv3 anchors (w, h pairs per level, stride 8 first) for its 416 px input.
GLUONCV_ANCHORS = ((10, 13, 16, 30, 33, 23), (30, 61, 62, 45, 59, 119), (116, 90, 156, 198, 373, 326))
GLUONCV_INPUT = 416


def _stage(channels, blocks, first, norm_layer, norm_kwargs):
    """One stride-2 step (and, for the first stage, the stem before it) with its residual blocks."""
    stage = nn.HybridSequential(prefix="")
    if first:
        stage.add(_conv2d(channels // 2, 3, 1, 1, norm_layer=norm_layer, norm_kwargs=norm_kwargs))
    stage.add(_conv2d(channels, 3, 1, 2, norm_layer=norm_layer, norm_kwargs=norm_kwargs))
    for _ in range(blocks):
        stage.add(DarknetBasicBlockV3(channels // 2, norm_layer=norm_layer, norm_kwargs=norm_kwargs))
    return stage


def tiny_darknet_stages(stage_channels=STAGE_CHANNELS, stage_blocks=STAGE_BLOCKS, norm_layer=BatchNorm,
                        norm_kwargs=None):
    """The three YOLOv3 stages (outputs at strides 8, 16 and 32), each fed the one before."""
    if len(stage_channels) != len(stage_blocks) or len(stage_channels) < 3:
        raise ValueError("tiny_yolo3: stage_channels and stage_blocks must match, with >= 3 stages")
    steps = [_stage(c, b, i == 0, norm_layer, norm_kwargs)
             for i, (c, b) in enumerate(zip(stage_channels, stage_blocks))]
    first = nn.HybridSequential(prefix="")  # everything up to stride 8
    for step in steps[:-2]:
        first.add(step)
    return [first, steps[-2], steps[-1]]


def scaled_anchors(data_shape):
    """GluonCV's anchors scaled from its 416 px input to ``data_shape`` (whole pixels, at least 1)."""
    scale = float(data_shape) / GLUONCV_INPUT
    return [[max(1, int(round(v * scale))) for v in level] for level in GLUONCV_ANCHORS]


def tiny_yolo3(classes, pretrained_base=False, data_shape=256, stage_channels=STAGE_CHANNELS,
               stage_blocks=STAGE_BLOCKS, head_channels=HEAD_CHANNELS, norm_layer=BatchNorm, norm_kwargs=None,
               **kwargs):
    """Build the tiny YOLOv3 for ``classes``, its anchors sized for a ``data_shape`` square input.

    ``pretrained_base`` is accepted for the common builder signature; the tiny backbone has no
    pretrained weights, so only False (or None) is meaningful. Other ``kwargs`` go to GluonCV's
    ``YOLOV3`` (``alloc_size``, ``nms_thresh``, ``post_nms``, ``ignore_iou_thresh``...).
    """
    if pretrained_base not in (False, None):
        raise ValueError("tiny_yolo3 has no pretrained backbone; build it with pretrained_base=False")
    stages = tiny_darknet_stages(stage_channels, stage_blocks, norm_layer, norm_kwargs)
    return YOLOV3(stages, list(head_channels), scaled_anchors(data_shape), list(STRIDES), list(classes),
                  norm_layer=norm_layer, norm_kwargs=norm_kwargs, **kwargs)
