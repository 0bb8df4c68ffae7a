"""gluondet eval on another dataset than the run's own leaves the run's analysis folder as it was
(detect --thresh best and report.html read it), and an evaluation that scored nothing is an error.
The run is an untrained tiny SSD: the tests are about which folder is written, not about AP."""
import hashlib
import os

import mxnet as mx  # first: eval's configure_engine would switch this process to the synchronous engine
import pytest
from click.testing import CliRunner

from data_helpers import write_voc
from gluondet.cli import main
from gluondet.run_folder import RunFolder

MODEL = {"name": "tiny_ssd", "family": "ssd", "builder": "tiny_ssd", "data_shape": 64}
CLASSES = ["dog", "cat"]


def voc_data(root, names, negatives=0):
    """Four 64x64 images with one box each of ``names`` in turn, and ``negatives`` images without
    objects, all in the val split."""
    images = {f"i{k}": {"size": (64, 64), "objects": [(names[k % len(names)], 5 + k, 6, 40, 50 - k)]}
              for k in range(4)}
    images.update({f"n{k}": {"size": (64, 64), "objects": []} for k in range(negatives)})
    return write_voc(root, images, splits={"val": list(images)})


@pytest.fixture
def run(tmp_path):
    from gluondet.models import build_model

    own = voc_data(tmp_path / "own", CLASSES)
    run = RunFolder.create(tmp_path / "run")
    run.write_info({"model": MODEL, "train": {"metric": "voc"},
                    "dataset": {"name": "own", "format": "voc", "root": str(own), "splits": {"val": "val"}}}, CLASSES)
    net = build_model(MODEL, CLASSES, pretrained_base=False)
    net(mx.nd.zeros((1, 3, 64, 64)))
    run.save_params(net, "best.params")
    run.unlock()
    return run.path


def folder_hash(root, ignore=None):
    """Names, modes and bytes of everything under ``root`` (but the top-level entry ``ignore``)."""
    digest = hashlib.sha256()
    for here, dirs, files in sorted(os.walk(root)):
        for name in sorted(dirs + files):
            path = os.path.join(here, name)
            if ignore and os.path.relpath(path, root).split(os.sep)[0] == ignore:
                continue
            digest.update(f"{os.path.relpath(path, root)}\0{os.lstat(path).st_mode:o}\0".encode())
            if os.path.isfile(path):
                with open(path, "rb") as f:
                    digest.update(f.read())
    return digest.hexdigest()


def gluondet(*args):
    result = CliRunner(mix_stderr=False).invoke(main, [str(a) for a in args] + ["--quiet", "--mosaics", "0"])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def test_another_dataset_leaves_the_runs_analysis_as_it_was(run, tmp_path):
    first = gluondet("eval", run, "--split", "val")
    assert first.exit_code == 0, first.stderr
    assert (run / "eval-val" / "analysis.json").is_file()
    before, folders = folder_hash(run), sorted(os.listdir(run))
    other = voc_data(tmp_path / "other", CLASSES[::-1])
    result = gluondet("eval", run, "-d", other, "--split", "val")
    assert result.exit_code == 0, result.stderr
    assert "on other (val, 4 images)" in result.stdout
    # the other dataset's analysis has a folder of its own; everything the run had is as it was
    assert sorted(os.listdir(run)) == sorted(folders + ["eval-val-on-other"])
    assert (run / "eval-val-on-other" / "analysis.json").is_file()
    assert folder_hash(run, ignore="eval-val-on-other") == before
    again = gluondet("eval", run, "-d", run.parent / "own", "--split", "val")  # the run's own, named by path
    assert again.exit_code == 0 and "eval-val-on-" not in again.stdout


def test_an_evaluation_that_scored_nothing_is_an_error(run, tmp_path):
    # no class of the run's: --skip-bad leaves the zebras out and evaluates the two negatives
    foreign = voc_data(tmp_path / "foreign", ["zebra"], negatives=2)
    before = folder_hash(run)
    result = gluondet("eval", run, "-d", foreign, "--split", "val", "--skip-bad")
    assert result.exit_code == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("gluondet: error:")]
    assert errors == [result.stderr.splitlines()[-1]] and "mAP" not in result.stdout
    assert "foreign (val, 2 images): no object of the run's classes (dog, cat) to evaluate" in errors[0]
    assert folder_hash(run) == before
