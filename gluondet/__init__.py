"""gluondet: train object detectors on your own labelled images with MXNet and GluonCV.

Data flows one way: config -> dataset -> model -> engine -> run folder -> eval / detect / export.
Importing this package imports neither MXNet nor GluonCV; the modules that need them do.
"""
__version__ = "0.1.0"
