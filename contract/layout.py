"""Names and versions of an output directory, shared by the writers (pipelines/) and the reader (distill/)."""

from contract import __version__

FORMAT_VERSION = 1  # manifest format; a reader refuses a newer major version
CODE_VERSION = __version__  # the package version, recorded in every manifest
MANIFEST_NAME = "manifest.json"
SUCCESS_MARKER = "_SUCCESS"  # written last; readers refuse a directory without it
IN_PROGRESS_MARKER = "_IN_PROGRESS"  # the claim of a running run
TRAINING_MARKER = "_TINYBERT_TRAINING"  # a training output's lasting mark: written by distill.run, so it may resume
DATASET_CARD = "README.md"  # read by `datasets.load_dataset(OUTPUT_DIR)`: the configs, splits and label names
REJECTS_SUBDIR = "rejects"

AUGMENTED_KIND = "augmented-task"  # python -m pipelines.augment
CORPUS_KIND = "general-distillation"  # python -m pipelines.corpus
STORE_FILL_KIND = "candidate-store-fill"  # python -m pipelines.augment --score_only: a manifest, rejects, no rows
OUTPUT_KINDS = (AUGMENTED_KIND, CORPUS_KIND, STORE_FILL_KIND)


def shard_file_name(index: int, num_shards: int) -> str:
    return f"part-{index:05d}-of-{num_shards:05d}.parquet"
