"""INT8 against float: inference speed-up and mAP drop of ``gluondet export --int8``, in one run.

Takes a trained run (e.g. tiny_ssd on shapes_voc), quantizes it exactly as ``gluondet export
--int8`` does (oneDNN, activation ranges calibrated on --calib-images images of the run's val
split), then on the val split:
  * speed: the network's forward pass (batches of --batch-size, hybridized, including SSD's box
    decoding and NMS, which stay float) for the float and the INT8 model, best of --repeat;
  * accuracy: VOC mAP (area) of both, boxes in original pixels, every box kept (thresh 0).

    .venv/bin/python scripts/bench/bench_int8.py --run runs/shapes_voc-tiny_ssd [--images 100]

``--speed-model NAME`` (e.g. ssd_300_vgg16_atrous) also times a zoo network with random weights
on the same images (speed only: untrained weights have no mAP worth comparing).
"""
import argparse
import time
from pathlib import Path

import numpy as np


def val_images(run_dir, count):
    from gluondet.export import _run_val_dataset
    from gluondet.predict import Detector

    detector = Detector.load(run_dir)
    dataset = _run_val_dataset(Path(run_dir), None, None, detector.classes)
    n = min(count, len(dataset))
    items = [dataset[i] for i in range(n)]
    return [img.asnumpy() for img, _ in items], [label for _, label in items]


def time_forward(detector, images, batch_size, repeat):
    """Best seconds per image of the network alone on preprocessed batches."""
    batches = []
    for start in range(0, len(images) - batch_size + 1, batch_size):
        batches.append(np.stack([detector.preprocess(img)[0] for img in images[start:start + batch_size]]))
    detector.forward(batches[0])  # warm-up: builds the cached graph
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for batch in batches:
            detector.forward(batch)
        best = min(best, time.perf_counter() - t0)
    return best / (len(batches) * batch_size)


def voc_map(detector, images, labels, batch_size):
    from gluondet.eval.voc_metric import VOCMApMetric

    metric = VOCMApMetric(iou_thresh=0.5, class_names=detector.classes)
    found = detector.detect(images, thresh=0.0, max_boxes=100, batch_size=batch_size)
    for dets, label in zip(found, labels):
        metric.update(dets.boxes[None], dets.class_ids[None].astype(np.float32), dets.scores[None],
                      label[None, :, :4], label[None, :, 4], label[None, :, 5] == 1)
    names, values = metric.get()
    return float(values[-1])  # the last entry is the mean


def quantized_twin(detector, calib_images):
    from gluondet.export import quantize_detector
    from gluondet.predict import Detector

    qnet = quantize_detector(detector, calib_images)
    return Detector(qnet, detector.info, ctx=detector.ctx)


def speed_only(model_name, images, args):
    import mxnet as mx

    from gluondet.config import resolve_model_config
    from gluondet.models import build_model
    from gluondet.predict import Detector, ModelInfo

    model_cfg = resolve_model_config(model_name)
    classes = ["circle", "square", "triangle"]
    net = build_model(model_cfg, classes, pretrained_base=False)
    side = int(model_cfg["data_shape"])
    net(mx.nd.zeros((1, 3, side, side)))
    float_det = Detector(net, ModelInfo(classes=classes, family="ssd", data_shape=side))
    n = max(args.batch_size, min(len(images), 2 * args.batch_size))
    t_float = time_forward(float_det, images[:n], args.batch_size, 1)
    int8_det = quantized_twin(float_det, images[:args.calib_images])
    t_int8 = time_forward(int8_det, images[:n], args.batch_size, 1)
    print(f"{model_name} ({side}px, random weights): float {1000 * t_float:.1f} ms/img, "
          f"INT8 {1000 * t_int8:.1f} ms/img, speed-up {t_float / t_int8:.2f}x")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", required=True, help="a trained SSD run folder")
    parser.add_argument("--images", type=int, default=100, help="val images to time and score")
    parser.add_argument("--calib-images", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--speed-model", help="also time this zoo SSD (random weights), e.g. ssd_300_vgg16_atrous")
    args = parser.parse_args()

    from gluondet.runtime import configure_threads

    threads = configure_threads()
    from gluondet.predict import Detector

    images, labels = val_images(args.run, args.images)
    float_det = Detector.load(args.run)
    picks = np.linspace(0, len(images) - 1, min(args.calib_images, len(images))).round().astype(int)
    int8_det = quantized_twin(Detector.load(args.run), [images[i] for i in picks])

    # alternate float and INT8 passes so a change in machine load hits both
    t_float, t_int8 = float("inf"), float("inf")
    for _ in range(args.repeat):
        t_float = min(t_float, time_forward(float_det, images, args.batch_size, 1))
        t_int8 = min(t_int8, time_forward(int8_det, images, args.batch_size, 1))
    map_float = voc_map(float_det, images, labels, args.batch_size)
    map_int8 = voc_map(int8_det, images, labels, args.batch_size)

    print(f"{args.run}: {len(images)} val images, input {float_det.info.data_shape}px, "
          f"batch {args.batch_size}, {threads} threads, calibrated on {len(picks)} images")
    print(f"float: {1000 * t_float:6.1f} ms/img   VOC mAP {100 * map_float:5.1f}")
    print(f"INT8:  {1000 * t_int8:6.1f} ms/img   VOC mAP {100 * map_int8:5.1f}")
    print(f"speed-up {t_float / t_int8:.2f}x, mAP change {100 * (map_int8 - map_float):+.1f} points")
    if args.speed_model:
        speed_only(args.speed_model, images, args)


if __name__ == "__main__":
    main()
