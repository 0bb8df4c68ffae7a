"""The tiny SSD: a small GluonCV SSD that learns the shapes demo data in minutes on 2 CPU cores.

GluonCV's smallest zoo SSD (``ssd_300_mobilenet0.25_custom``) barely learns from scratch on a CPU:
its backbone is meant to start from ImageNet weights, and 300 px inputs cost more than 2 cores can
give. This network is a plain ``gluoncv.model_zoo.ssd.SSD`` (same outputs, ``set_nms``,
``reset_class``, anchors for ``SSDDefaultTrainTransform``, ``SSDMultiBoxLoss``) whose ``features``
block is a small VGG-like stack of 3x3 conv + BatchNorm + ReLU, built for training from scratch:
BatchNorm everywhere keeps it trainable at a high learning rate, and three feature maps at strides
8, 16 and 32 carry anchors sized to objects from about a tenth to a half of the image.
"""
from mxnet.gluon import nn

from gluoncv.model_zoo.ssd import SSD

# Channels of each stage; every stage halves the resolution. The last three stages' outputs are
# the SSD feature maps (strides 8, 16, 32).
STAGE_CHANNELS = (16, 32, 64, 96, 128)
CONVS_PER_STAGE = (1, 1, 2, 2, 1)
FEATURE_STRIDES = (8, 16, 32)
# Anchor sizes as fractions of the input side: layer i uses (s[i], sqrt(s[i] * s[i + 1])).
ANCHOR_SIZE_FRACTIONS = (0.08, 0.18, 0.38, 0.70)
ANCHOR_RATIOS = ((1, 2, 0.5),) * 3


def _conv_bn_relu(channels, strides, norm_layer, norm_kwargs):
    block = nn.HybridSequential(prefix="")
    block.add(nn.Conv2D(channels, 3, strides=strides, padding=1, use_bias=False))
    block.add(norm_layer(**(norm_kwargs or {})))
    block.add(nn.Activation("relu"))
    return block


class TinyFeatures(nn.HybridBlock):
    """Backbone returning the three SSD feature maps (strides 8, 16, 32) of an NCHW image batch."""

    def __init__(self, stage_channels=STAGE_CHANNELS, convs_per_stage=CONVS_PER_STAGE,
                 norm_layer=nn.BatchNorm, norm_kwargs=None, **kwargs):
        super().__init__(**kwargs)
        n_outputs = len(FEATURE_STRIDES)
        with self.name_scope():
            self.stages = nn.HybridSequential()
            for channels, n_convs in zip(stage_channels, convs_per_stage):
                stage = nn.HybridSequential(prefix="")
                for k in range(n_convs):
                    stage.add(_conv_bn_relu(channels, 2 if k == 0 else 1, norm_layer, norm_kwargs))
                self.stages.add(stage)
        self._first_output = len(stage_channels) - n_outputs

    def hybrid_forward(self, F, x):
        outputs = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i >= self._first_output:
                outputs.append(x)
        return outputs


def _features_factory(stage_channels, convs_per_stage):
    """What SSD's ``features`` argument expects: a callable that builds the block from SSD's kwargs."""

    def make(pretrained=False, ctx=None, root=None, norm_layer=nn.BatchNorm, norm_kwargs=None):
        # nothing to load: the tiny backbone has no pretrained weights
        return TinyFeatures(stage_channels, convs_per_stage, norm_layer=norm_layer,
                            norm_kwargs=norm_kwargs)

    return make


def tiny_ssd(classes, pretrained_base=False, data_shape=192, stage_channels=STAGE_CHANNELS,
             convs_per_stage=CONVS_PER_STAGE, anchor_size_fractions=ANCHOR_SIZE_FRACTIONS, **kwargs):
    """Build the tiny SSD for ``classes`` at a square input of ``data_shape`` pixels.

    ``pretrained_base`` is accepted for the common builder signature; the tiny backbone has no
    pretrained weights, so only False (or None) is meaningful. Other ``kwargs`` go to GluonCV's
    ``SSD`` (for example ``nms_thresh``, ``post_nms``, ``norm_layer``).
    """
    if pretrained_base not in (False, None):
        raise ValueError("tiny_ssd has no pretrained backbone; build it with pretrained_base=False")
    if len(stage_channels) != len(convs_per_stage) or len(stage_channels) < len(FEATURE_STRIDES):
        raise ValueError("tiny_ssd: stage_channels and convs_per_stage must match, with >= 3 stages")
    strides = [2 ** (len(stage_channels) - len(FEATURE_STRIDES) + 1 + i) for i in range(len(FEATURE_STRIDES))]
    sizes = [f * data_shape for f in anchor_size_fractions]
    return SSD(
        network=None,
        base_size=data_shape,
        features=_features_factory(tuple(stage_channels), tuple(convs_per_stage)),
        num_filters=None,
        sizes=sizes,
        ratios=list(ANCHOR_RATIOS),
        steps=strides,
        classes=list(classes),
        pretrained=False,
        **kwargs,
    )
