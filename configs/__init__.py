"""Shipped dataset and model configs (installed as the package ``gluondet.configs``)."""
