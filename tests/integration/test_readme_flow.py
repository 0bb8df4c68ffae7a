"""README's "Using it on your own photos" block, run as written: its commands are read from README.md,
on labelme files generated here, with the tiny SSD on two CPU contexts in place of the SSD512 on two
GPUs (the only substitutions; a step README adds or renames is run or fails here)."""
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
SECTION = "## Using it on your own photos"
# the run on two GPUs, made small enough for the suite on two CPU contexts
SMALL_RUN = ["--ctx", "cpu0,cpu1", "--model", "tiny_ssd", "--epochs", "1", "--max-iters", "2", "--batch-size", "2",
             "--data-shape", "64", "--quiet"]


def readme_commands():
    """The gluondet commands of the section's first code block, in order (comments dropped)."""
    text = README.read_text(encoding="utf-8")
    block = re.search(r"```bash\n(.*?)```", text[text.index(SECTION):], re.S).group(1)
    lines = [line.split("  #")[0].strip() for line in block.splitlines()]
    return [shlex.split(line) for line in lines if line.startswith("gluondet ")]


def write_labelme_photos(folder, count=20):
    """``count`` labelme JSON files beside their JPEGs, boxes drawn as rectangles (the generator's
    shapes, so the labels are right)."""
    from gluondet.config import resolve_dataset
    from gluondet.data import load_dataset
    from gluondet.data.synth import write_shapes_voc

    voc = write_shapes_voc(folder.parent / "voc_source", n_train=count, n_val=0, seed=5, size=96)
    ds = load_dataset(resolve_dataset(str(voc)), None)
    folder.mkdir()
    for i in range(len(ds)):
        path = ds.image_path(i)
        (folder / path.name).write_bytes(path.read_bytes())
        w, h = ds.image_size(i)
        shapes = [{"label": ds.classes[int(row[4])], "points": [[float(row[0]), float(row[1])], [float(row[2]), float(row[3])]],
                   "shape_type": "rectangle", "group_id": None, "flags": {}} for row in ds.label(i)]
        doc = {"version": "5.2.1", "flags": {}, "shapes": shapes, "imagePath": path.name, "imageData": None,
               "imageHeight": h, "imageWidth": w}
        (folder / f"{path.stem}.json").write_text(json.dumps(doc))
    return ds.image_path(0)


def as_run_here(args, labelme_dir, photo):
    """A README command with the section's placeholders filled in (photos, GPUs)."""
    args = [str(labelme_dir) if a == "my_labelme/" else str(photo) if a == "img.jpg" else a for a in args]
    if args[1] == "train":
        i = args.index("--ctx")
        args = args[:i] + args[i + 2:] + SMALL_RUN
    return [a.replace("ssd_512_vgg16_atrous", "tiny_ssd") for a in args]


@pytest.mark.slow
def test_the_own_photos_block_of_readme_runs_as_written(tmp_path):
    commands = readme_commands()
    assert [c[1] for c in commands][:4] == ["data"] * 4 and "train" in [c[1] for c in commands]
    photo = write_labelme_photos(tmp_path / "my_labelme")
    env_python = Path(sys.executable).with_name("gluondet")
    for args in commands:
        args = as_run_here(args, tmp_path / "my_labelme", photo)
        result = subprocess.run([str(env_python), *args[1:]], cwd=tmp_path, capture_output=True, text=True,
                                timeout=900)
        assert result.returncode == 0, f"{' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    assert (tmp_path / "runs" / "helmet-tiny_ssd" / "best.params").is_file()
    assert (tmp_path / "deploy" / "export.json").is_file()
