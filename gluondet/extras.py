"""The pip line that installs one of gluondet's optional extras (onnx, serve, cu112, ...).

``pip install 'gluondet[onnx]'`` only works where gluondet comes from an index; from a checkout
(``pip install -e .``, what README and scripts/setup_env.sh do) pip would look for a package called
gluondet on PyPI. The installed distribution's own metadata names each extra's requirements with
the versions constraints.txt locked, so the line built from it works wherever gluondet is installed.
"""
import importlib.metadata


def extra_requirements(extra, distribution="gluondet"):
    """The requirements (``name==version``) the installed gluondet declares for ``extra`` only, or
    None when gluondet's metadata is not installed (run from a source tree on PYTHONPATH)."""
    # here, not at the top: runtime.py imports this module on every command's start, and only an
    # error's hint needs packaging (28 ms; matplotlib's dependency, not gluondet's own)
    from packaging.requirements import InvalidRequirement, Requirement

    try:
        declared = importlib.metadata.requires(distribution) or []
    except importlib.metadata.PackageNotFoundError:
        return None
    found = []
    for text in declared:
        try:
            req = Requirement(text)
        except InvalidRequirement:
            continue  # a malformed line in someone's metadata is not this hint's problem
        if req.marker is not None and req.marker.evaluate({"extra": extra}) \
                and not req.marker.evaluate({"extra": ""}):
            found.append(f"{req.name}{req.specifier}")
    return found


def install_line(extra):
    """``pip install 'onnx==1.14.1' ...`` for ``extra``; from a source tree without metadata, the
    checkout's own set-up command."""
    found = extra_requirements(extra)
    if not found:
        extras = extra if extra in ("cpu", "cu112") else f"cpu,{extra}"
        return f"scripts/setup_env.sh {extras} (in a gluondet checkout)"
    return "pip install " + " ".join(f"'{r}'" for r in found)
