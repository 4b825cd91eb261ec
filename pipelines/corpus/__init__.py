"""Wikipedia dumps or any text -> general-distillation Parquet shards (TinyBERT's `pregenerate_training_data.py`).

Usage:
  python -m pipelines.corpus \\
      --input '/data/enwiki-latest-pages-articles-multistream*.xml.bz2' --input_format wikipedia-xml \\
      --output /data/tinybert-general --tokenizer bert-base-uncased --epochs 3 --seed 42 --num_shards 64

Output (see docs/corpus.md for the data contract): `epoch-E/part-NNNNN-of-MMMMM.parquet` for each epoch,
`rejects/part-...parquet`, `manifest.json`, `_SUCCESS`.

Random-next sentences come from a bucket of documents: each epoch, every document is hashed with (seed, epoch, its
key) into one of ceil(documents / docs_per_bucket) buckets, and a document's random-next B is drawn from the other
documents of its bucket, so no worker ever needs the whole corpus.
"""

__all__ = ["main", "run"]


def __getattr__(name):
    # `run` and `main` are imported on first use: `python -m pipelines.corpus` imports this package before
    # __main__.py, and importing Beam here would log through the root logger before the entry point has set
    # logging up (see pipelines/entry.py).
    if name in __all__:
        from pipelines.corpus import pipeline
        return getattr(pipeline, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
