"""Output directories that describe themselves, shared by both pipelines.

An output directory holds:
  <subdir>/part-NNNNN-of-MMMMM.parquet   rows, explicit pyarrow schema, written by `WriteShards`
  rejects/part-...parquet                 every rejected input record with its reason
  README.md                               the dataset card (`datasets.load_dataset(OUTPUT_DIR)`)
  manifest.json                           what was made, from what, with which tokenizer, and the counts
  _SUCCESS                                written last; readers refuse a directory without it

  shards      the keyed sink: shard assignment, atomic writes, `WriteShards`, `WriteBatchedShards`, `CountByKey`
  finalize    `FinalizeOutput`: empty shards, dataset card, manifest, `_SUCCESS`
  results     `QualityRule`, the failure line, the end-of-run summary, the dataset card
  filesystem  the output claim (`contract.claim`) and the finished-output reader (`contract.finished`) on any Beam
              filesystem
"""

from contract.claim import OutputClaimLostError, OutputExistsError, OutputInUseError
from pipelines.outputs.filesystem import check_claim, claim_output_dir, read_manifest, release_claim
from pipelines.outputs.finalize import FinalizeOutput
from pipelines.outputs.shards import (CountByKey, ShardSet, WriteBatchedShards, WriteShards, encode_batch, join_path,
                                      shard_of, write_bytes_atomically, write_table_atomically)
from pipelines.outputs.results import QualityRule, dataset_card, raise_if_failed, summary
from pipelines.progress import human_bytes

__all__ = ["OutputClaimLostError", "OutputExistsError", "OutputInUseError", "check_claim", "claim_output_dir",
           "read_manifest", "release_claim", "FinalizeOutput", "CountByKey", "ShardSet", "WriteBatchedShards",
           "WriteShards", "encode_batch", "join_path", "shard_of", "write_bytes_atomically", "write_table_atomically",
           "QualityRule", "dataset_card", "raise_if_failed", "summary", "human_bytes"]
