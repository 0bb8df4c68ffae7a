"""Pretrained weights from GluonCV's model store (backbones and whole detectors), or a local file.

GluonCV fetches ImageNet backbones through ``gluoncv.model_zoo.model_store.get_model_file``, which
downloads into ``$MXNET_HOME/models`` (default ``~/.mxnet/models``) when the file is not there. Offline
that surfaces as a requests/urllib traceback deep inside a model constructor; here it becomes one
GluondetError that names the file to place and the flags that avoid the download.
"""
import contextlib
import os
from pathlib import Path

from ..errors import GluondetError


def model_store_dir(root=None):
    """The folder GluonCV's model store reads and downloads into."""
    if "MXNET_HOME" in os.environ:
        return Path(os.environ["MXNET_HOME"]) / "models"
    return Path(os.path.expanduser(root or os.path.join("~", ".mxnet", "models")))


def expected_weight_file(name, root=None):
    """Where GluonCV's model store expects the weights called ``name`` (``<name>-<hash>.params``)."""
    from gluoncv.model_zoo import model_store

    try:
        short = model_store.short_hash(name)
    except (KeyError, ValueError):
        short = "<hash>"
    return model_store_dir(root) / f"{name}-{short}.params"


BACKBONE_ALTERNATIVES = ("or pass --pretrained-base PATH to use a local .params file, "
                         "or --no-pretrained-base to train from scratch")
DETECTOR_ALTERNATIVES = "or pass --init-from PATH.params (a detector's weights, or a run folder) instead"


@contextlib.contextmanager
def model_store(override_path=None, what="pretrained backbone", alternatives=BACKBONE_ALTERNATIVES):
    """While active, the model store returns ``override_path`` for its first request (if given), and
    any failure to fetch weights is a GluondetError naming the file to place (then ``alternatives``).

    GluonCV's constructors import ``get_model_file`` from the module at call time, so replacing the
    module attribute reaches them all (VGG, ResNet, MobileNet backbones and whole detectors).
    """
    from gluoncv.model_zoo import model_store as store

    original = store.get_model_file
    served = []

    def get_model_file(name, tag=None, root=os.path.join("~", ".mxnet", "models")):
        if override_path is not None and not served:
            served.append(name)
            return str(override_path)
        try:
            return original(name, tag=tag, root=root)
        except GluondetError:
            raise
        except Exception as e:  # requests, urllib, zipfile, hash mismatch: all mean "not available"
            target = expected_weight_file(name, root)
            reason = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
            raise GluondetError(
                f"cannot fetch the {what} '{name}' ({reason}); place the file {target} "
                f"(GluonCV model zoo, gluoncv.model_zoo.model_store; the folder is $MXNET_HOME/models), "
                f"{alternatives}"
            ) from None

    store.get_model_file = get_model_file
    try:
        yield
    finally:
        store.get_model_file = original


def check_weight_file(path, flag="--pretrained-base"):
    """A user-given weights file must exist and be a .params file."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise GluondetError(f"{flag} {path}: file does not exist")
    if path.suffix != ".params":
        raise GluondetError(f"{flag} {path}: expected an MXNet .params file")
    return path
