"""Beam pipelines: `python -m pipelines.augment` and `python -m pipelines.corpus`."""
