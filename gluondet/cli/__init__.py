"""The ``gluondet`` command: a click group with one thin module per subcommand.

Each command checks its arguments, calls one library function and prints. MXNet and GluonCV are
imported only inside the commands that need them, so ``gluondet --help`` and ``data`` answer at
once. A GluondetError (a problem the user can fix) is printed as one line with exit status 2;
anything else is a bug and keeps its traceback.
"""
import sys

import click

from .. import __version__
from ..errors import GluondetError
from ..progress import configure as configure_progress
from ..progress import say_error
from ..runtime import configure_threads


class GluondetGroup(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except GluondetError as e:
            say_error(e)
            sys.exit(2)


@click.group(cls=GluondetGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gluondet")
def main():
    """Train object detectors (SSD, Faster R-CNN, Mask R-CNN, YOLOv3, CenterNet) on your own labelled images.

    \b
    Typical use:
      gluondet data synth data/shapes          # or label your photos with LabelImg / labelme
      gluondet data check --dataset helmet_voc
      gluondet train --dataset helmet_voc --ctx gpu0,gpu1
      gluondet eval runs/helmet_voc-ssd_512_vgg16_atrous
      gluondet detect photo.jpg
    """
    configure_threads()
    configure_progress(quiet=False)  # each invocation starts from the default; -q sets it per command


def _register():
    # Explicit, so the list of commands is visible here.
    from .data import data
    from .detect import detect
    from .eval import eval_cmd
    from .export import export
    from .launch import launch
    from .report import report
    from .serve import serve
    from .train import train

    for command in (data, train, eval_cmd, detect, export, launch, report, serve):
        main.add_command(command)


_register()
