"""TinyBERT data augmentation of a task's training set, as a Beam pipeline (`run`, `main`).

Usage:
  python -m pipelines.augment --runner=DirectRunner --task SST-2 --input glue/SST-2/train.tsv \
      --output out/sst2-aug --model bert-base-uncased --glove glove.6B.300d.txt

or from Python: `from pipelines import augment; augment.run([...])`. Modules: config (the options), read (input
formats), resources (model, GloVe, device), transforms (DoFns and composites), pipeline (parse, check, build, run,
summarize), report.

`run` and `main` load with their first use: importing the package stays light, so that the console script can set
up logging before Beam's import logs anything.
"""

__all__ = ["run", "main"]


def __getattr__(name):
    if name in __all__:
        from pipelines.augment import pipeline
        return getattr(pipeline, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
