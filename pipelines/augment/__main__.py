"""`python -m pipelines.augment`: the console script `tinybert-augment` (pipelines.entry)."""

from pipelines import entry

entry.augment()
