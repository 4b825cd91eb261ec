"""`python -m pipelines.augment`: the console script `tinybert-augment` (pipelines.entry)."""

from pipelines import entry

# Guarded: a --local_workers run starts worker processes that re-import this module under another name.
if __name__ == "__main__":
    entry.augment()
