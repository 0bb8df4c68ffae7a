"""gluondet: train object detectors on your own labelled images with MXNet and GluonCV."""
import pathlib
import re

from setuptools import find_packages, setup

HERE = pathlib.Path(__file__).resolve().parent


def read_pins(path=HERE / "constraints.txt"):
    """Sections of constraints.txt (``# [name]`` headers) as {section: [requirement, ...]}."""
    sections, current = {}, None
    for line in path.read_text(encoding="utf-8").splitlines():
        header = re.match(r"#\s*\[(\w+)\]", line.strip())
        if header:
            current = sections.setdefault(header.group(1), [])
        elif line.strip() and not line.lstrip().startswith("#") and current is not None:
            current.append(line.strip())
    return sections


def read_version():
    text = (HERE / "gluondet" / "__init__.py").read_text(encoding="utf-8")
    return re.search(r'__version__ = "([^"]+)"', text).group(1)


pins = read_pins()
setup(
    name="gluondet",
    version=read_version(),
    description="Object-detection training on your own data with MXNet and GluonCV",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    # The top-level configs/ folder ships as the package gluondet.configs, so an installed gluondet
    # finds its dataset and model configs without a checkout (one copy, no build-time duplication).
    packages=find_packages(include=["gluondet", "gluondet.*"]) + ["gluondet.configs"],
    package_dir={"gluondet.configs": "configs"},
    package_data={"gluondet.configs": ["datasets/*.yaml", "models/*.yaml"], "gluondet.serve": ["page/*"]},
    # 3.9: the oldest Python the locked scipy 1.11 and matplotlib 3.8 install on (scripts/lock.sh
    # resolves the locks from it); 3.11: the newest mxnet 1.9.1 runs on (with numpy < 1.24)
    python_requires=">=3.9,<3.12",
    install_requires=pins["runtime"],
    # the test extra brings onnx, serve and horovod too, so the ONNX export, the server and Horovod
    # training are tested wherever the suite runs. Horovod has no wheels: scripts/install_horovod.sh
    # builds it (scripts/setup_env.sh runs it for a lock that holds horovod)
    extras_require={"cpu": pins["cpu"], "cu112": pins["cu112"], "onnx": pins["onnx"],
                    "tensorboard": pins["tensorboard"], "serve": pins["serve"], "horovod": pins["horovod"],
                    "test": pins["test"] + pins["onnx"] + pins["serve"] + pins["horovod"]},
    entry_points={"console_scripts": ["gluondet=gluondet.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Image Recognition",
    ],
)
