"""CenterNet networks for any list of classes: GluonCV's ``CenterNet`` on its base networks.

GluonCV ships CenterNet only for VOC's and COCO's classes (``center_net_resnet18_v1b_voc``, ...);
these builders put the same pieces together for the dataset's own classes, as its ``*_voc`` and
``*_coco`` constructors do: a base network that outputs one feature map at stride 4 (ResNet-v1b
with three deconvolution stages, DLA-34 with its aggregation up-path, MobileNetV3 with DUC
upsampling), three heads (class heatmap with the prior bias -2.19 = -log((1 - 0.1) / 0.1), box
width/height, centre offset) behind a 3x3 convolution of 64 channels, and the heatmap decoder.

``tiny`` is gluondet's own base for the CPU demo (``center_net_tiny``): five 3x3 conv + BatchNorm
stages down to stride 32 and a light up-path back to stride 4 (nearest upsampling, a 1x1 lateral
from the stage of that stride, a 3x3 conv), trainable from scratch; it has no ImageNet weights.

``CenterNetDetector`` is GluonCV's ``CenterNet``: same heads, losses, decoder, ``reset_class``;
in predict mode its class ids and scores come out as (B, K, 1), the shapes of GluonCV's SSD and
YOLOv3 (GluonCV's CenterNet gives (B, K)), so eval, detect and every export read one layout.
Boxes come out in input pixels (the decoder multiplies the stride-4 map positions by ``scale``).
"""
import warnings
from collections import OrderedDict

from mxnet import autograd
from mxnet.gluon import nn

from gluoncv.model_zoo.center_net.center_net import CenterNet

HEATMAP_BIAS = -2.19  # GluonCV's heatmap prior: -log((1 - 0.1) / 0.1), a 0.1 probability at the start
OUTPUT_STRIDE = 4  # every base network here outputs its feature map at 1/4 of the input
HEAD_CHANNELS = 64  # GluonCV's head_conv_channel for every CenterNet
# the tiny base: channels and 3x3 convolutions of each stage (each halves the resolution), and
# the channels of its up-path back to stride 4
TINY_STAGE_CHANNELS = (16, 32, 64, 96, 128)
TINY_CONVS_PER_STAGE = (1, 1, 2, 2, 1)
TINY_UP_CHANNELS = 48
TINY_HEAD_CHANNELS = 32


class CenterNetDetector(CenterNet):
    """GluonCV's CenterNet; predict mode returns (ids (B, K, 1), scores (B, K, 1), boxes (B, K, 4))
    with boxes in input pixels, training mode (heatmap after sigmoid, wh, offset) at stride 4."""

    def hybrid_forward(self, F, x):
        out = super().hybrid_forward(F, x)
        if autograd.is_training():
            return out
        ids, scores, boxes = out
        return ids.expand_dims(-1), scores.expand_dims(-1), boxes


def _conv_bn_relu(channels, kernel, strides, norm_layer, norm_kwargs):
    block = nn.HybridSequential(prefix="")
    block.add(nn.Conv2D(channels, kernel, strides=strides, padding=kernel // 2, use_bias=False))
    block.add(norm_layer(**(norm_kwargs or {})))
    block.add(nn.Activation("relu"))
    return block


class TinyBase(nn.HybridBlock):
    """A small encoder to stride 32 and an up-path to stride 4, one feature map out (NCHW)."""

    def __init__(self, stage_channels=TINY_STAGE_CHANNELS, convs_per_stage=TINY_CONVS_PER_STAGE,
                 up_channels=TINY_UP_CHANNELS, norm_layer=nn.BatchNorm, norm_kwargs=None, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.stages = nn.HybridSequential()
            for channels, n_convs in zip(stage_channels, convs_per_stage):
                stage = nn.HybridSequential(prefix="")
                for k in range(n_convs):
                    stage.add(_conv_bn_relu(channels, 3, 2 if k == 0 else 1, norm_layer, norm_kwargs))
                self.stages.add(stage)
            # from the deepest stage up to the stage of stride 4 (the second): a lateral 1x1 of the
            # skip, added to the upsampled path, then a 3x3
            self.top = _conv_bn_relu(up_channels, 1, 1, norm_layer, norm_kwargs)
            self.laterals = nn.HybridSequential()
            self.smooth = nn.HybridSequential()
            for _ in range(len(stage_channels) - 2):
                self.laterals.add(_conv_bn_relu(up_channels, 1, 1, norm_layer, norm_kwargs))
                self.smooth.add(_conv_bn_relu(up_channels, 3, 1, norm_layer, norm_kwargs))

    def hybrid_forward(self, F, x):
        skips = []
        for stage in self.stages:
            x = stage(x)
            skips.append(x)
        y = self.top(skips[-1])
        for lateral, smooth, skip in zip(self.laterals, self.smooth, reversed(skips[1:-1])):
            y = smooth(F.UpSampling(y, scale=2, sample_type="nearest") + lateral(skip))
        return y


def _base_network(base, pretrained_base, norm_layer, norm_kwargs):
    """GluonCV's CenterNet base network ``base`` (initialized: GluonCV's constructors do it)."""
    base_kwargs = {"norm_layer": norm_layer, "norm_kwargs": norm_kwargs}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "... is already initialized, ignoring"
        if base == "tiny":
            return TinyBase(norm_layer=norm_layer, norm_kwargs=norm_kwargs)
        if base in ("resnet18_v1b", "resnet50_v1b"):
            from gluoncv.model_zoo.center_net.deconv_resnet import get_deconv_resnet

            return get_deconv_resnet(base, pretrained=pretrained_base, **base_kwargs)
        if base == "dla34":
            from gluoncv.model_zoo.center_net.deconv_dla import get_deconv_dla

            return get_deconv_dla(base, pretrained=pretrained_base, scale=OUTPUT_STRIDE, **base_kwargs)
        if base == "mobilenetv3_large_duc":
            from gluoncv.model_zoo.center_net.duc_mobilenet import mobilenetv3_large_duc

            # DUC supports plain BatchNorm only
            return mobilenetv3_large_duc(pretrained=pretrained_base)
    raise ValueError(f"no CenterNet base network '{base}'")


def center_net(base, classes, pretrained_base=True, topk=100, head_channels=None, norm_layer=nn.BatchNorm,
               norm_kwargs=None, **kwargs):
    """A CenterNet for ``classes`` on base network ``base`` (resnet18_v1b, resnet50_v1b, dla34,
    mobilenetv3_large_duc, or tiny). ``pretrained_base`` loads the base's ImageNet weights through
    GluonCV's model store (tiny has none: ignored). ``topk``: detections per image (GluonCV's COCO models
    keep 100, its VOC ones 40). Other ``kwargs`` go to GluonCV's ``CenterNet`` (``flip_test``).

    Without a pretrained base, the base's convolutions get Xavier (magnitude 2) rather than the
    uniform(+-0.07) GluonCV's constructors give them (gluondet's from-scratch initialization,
    ``models.initialize_missing``); its deconvolutions keep their bilinear start.
    """
    import mxnet as mx

    if base == "tiny":
        # nothing to load: "pretrained base on by default" has no meaning here (build_model refuses
        # a --pretrained-base file for it: models.NO_PRETRAINED_BASE)
        pretrained_base = False
    features = _base_network(base, bool(pretrained_base), norm_layer, norm_kwargs)
    if not pretrained_base and base != "tiny":
        features.collect_params().initialize(mx.init.Xavier(magnitude=2), force_reinit=True)
    heads = OrderedDict([("heatmap", {"num_output": len(classes), "bias": HEATMAP_BIAS}),
                         ("wh", {"num_output": 2}), ("reg", {"num_output": 2})])
    head_channels = head_channels or (TINY_HEAD_CHANNELS if base == "tiny" else HEAD_CHANNELS)
    net = CenterNetDetector(features, heads, list(classes), head_conv_channel=head_channels,
                            scale=float(OUTPUT_STRIDE), topk=topk, **kwargs)
    return net
