"""The candidate store (augment/store.py) on any Beam filesystem: the model's fingerprint, looking answers up,
writing them as they are computed, the store's size.

The launcher fingerprints the model (`fingerprint_model`) and records it in the store (`record_model`); a folder
without weights is matched to a recorded model by its config and vocabulary (`find_recorded_model`). Workers use a
`CandidateStore` per scoring DoFn: `look_up` reads only the buckets of its queries, `write` lands each batch of
answers as new parts (a temporary name, then a rename), so a run killed at any moment keeps what it answered.
"""

import hashlib
import json
import logging
import os
import uuid
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from augment import mlm as mlm_lib
from augment import store as store_lib
from augment.mlm import MaskedQuery
from contract.errors import UserError
from pipelines import outputs
from pipelines.augment.config import AugmentConfig, StoreSettings

WEIGHT_NAMES = ("model.safetensors", "pytorch_model.bin")
INDEX_NAMES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
VOCAB_NAMES = ("vocab.txt", "tokenizer.json")


class CandidateStore:
    """One model's answers at one precision and top_k, under `root` (any Beam filesystem path).

    Args:
      root: the store's root folder.
      model_id: `ModelFingerprint.model_id` of the model.
      settings_id: `augment.store.settings_id(precision=..., top_k=...)`.
    """

    def __init__(self, root: str, model_id: str, settings_id: str):
        self._dir = outputs.join_path(root, model_id, settings_id)
        self._warned: Set[str] = set()  # one warning per damaged part, however often it is met

    def look_up(self, queries: Iterable[MaskedQuery]) -> Dict[MaskedQuery, List[str]]:
        """The stored answers of `queries` (those found; a query missing from the result must be computed).

        Reads only the buckets the queries fall in, parts in name order (the first part holding a key gives its
        answer), and stops reading a bucket once every query of it is found. A part that cannot be read is skipped
        with one warning: its queries are then answered again.
        """
        found: Dict[MaskedQuery, List[str]] = {}
        for bucket, bucket_queries in sorted(store_lib.buckets_of(set(queries)).items()):
            wanted = {store_lib.query_key(query): query for query in bucket_queries}
            for path in self._parts(bucket):
                if not wanted:
                    break
                try:
                    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
                        answers = store_lib.decode_part(handle.read(), wanted)
                except (OSError, store_lib.DamagedPartError) as error:
                    self._warn_damaged(path, error)
                    continue
                for key, candidates in answers.items():
                    found[wanted.pop(key)] = candidates
        return found

    def write(self, answers: Mapping[MaskedQuery, Sequence[str]]) -> None:
        """Adds `answers` to the store: one new part per bucket they fall in, each complete or absent."""
        for bucket, bucket_queries in sorted(store_lib.buckets_of(answers).items()):
            data = store_lib.encode_part({query: answers[query] for query in bucket_queries})
            name = f"{store_lib.PART_PREFIX}{uuid.uuid4().hex}{store_lib.PART_SUFFIX}"
            outputs.write_bytes_atomically(data, outputs.join_path(self._dir, bucket), name)

    def _parts(self, bucket: str) -> List[str]:
        pattern = outputs.join_path(self._dir, bucket, f"{store_lib.PART_PREFIX}*{store_lib.PART_SUFFIX}")
        return sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list
                      if store_lib.is_part_name(m.path.rsplit("/", 1)[-1]))

    def _warn_damaged(self, path: str, error: Exception) -> None:
        if path not in self._warned:
            self._warned.add(path)
            logging.warning("candidate store: skipping the damaged part %s (%s); its queries are answered again",
                            path, error)


# ------------------------------------------------------------------------------------------ model fingerprints
def resolve_store(config: AugmentConfig) -> Tuple[Optional[StoreSettings], Optional[store_lib.ModelFingerprint]]:
    """The run's store and the model's fingerprint: the model fingerprinted, or matched, for a folder without
    weights, to the one recorded model of its config and vocabulary (fingerprint None). (None, None): the store is
    off, or a folder without weights matches no recorded model (the caller then asks for the weights).

    Raises:
      UserError: a folder without weights matches several recorded models (they differ in weights only); a
        --score_only run whose model cannot be fingerprinted.
    """
    root = config.store_root()
    if root is None:
        return None, None
    parts = fingerprint_parts(config.model)
    settings = expected_settings_id(model=config.model, precision=config.precision, top_k=config.top_k,
                                    device=config.device)
    if parts["weights_sha256"] is not None:
        fingerprint = store_lib.ModelFingerprint(**parts)
        return StoreSettings(root, fingerprint.model_id, settings), fingerprint
    if not os.path.isdir(config.model):
        if config.score_only:
            raise UserError(f"--score_only: cannot read the weight files of --model {config.model} to fingerprint it; "
                            "pass a local folder written by save_pretrained")
        logging.warning("augment: cannot read the weight files of --model %s to fingerprint it: the candidate store "
                        "is off for this run", config.model)
        return None, None
    if config.score_only:
        return None, None
    matches = _recorded_like(root, parts)
    if len(matches) > 1:
        raise UserError(f"--model {config.model} holds no weights, and {len(matches)} models of its config and "
                        f"vocabulary are recorded in --candidate_store {root} ("
                        f"{', '.join(m.model_id for m in matches)}); put the weights back into the folder")
    if not matches:
        return None, None
    # Draw from the answers of whichever variant of the precision scored them (bf16 on a GPU, fused bf16 on a CPU):
    # this machine's own where the store holds it.
    stored = stored_settings(root, matches[0].model_id, precision=config.precision, top_k=config.top_k)
    if settings not in stored and len(stored) > 1:
        raise UserError(f"--candidate_store {root} holds answers of several scorer variants of --precision "
                        f"{config.precision} for this model ({', '.join(stored)}); put the weights back into "
                        f"{config.model}, or --prune_store and score again")
    settings = settings if settings in stored or not stored else stored[0]
    logging.info("augment: --model %s holds no weights: every masked-LM answer comes from the candidate store "
                 "(model %s)", config.model, matches[0].model_id)
    return StoreSettings(root, matches[0].model_id, settings, weightless=True), None


def expected_settings_id(*, model: str, precision: str, top_k: int, device: str) -> str:
    """The settings folder a scorer of `precision` on this machine's `device` answers into: its variant
    (`augment.mlm.expected_variant`), known from the model's config alone."""
    variant = precision
    if precision == "bf16":
        import torch
        from transformers import AutoConfig
        cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
        variant = mlm_lib.expected_variant(precision, device_type="cuda" if cuda else "cpu",
                                           config=AutoConfig.from_pretrained(model))
    return store_lib.settings_id(variant=variant, top_k=top_k)


def stored_settings(root: str, model_id: str, *, precision: str, top_k: int) -> List[str]:
    """The settings folders of a model's answers at every variant of `precision`, sorted."""
    pattern = outputs.join_path(root, model_id, store_lib.settings_pattern(precision=precision, top_k=top_k), "*",
                                f"{store_lib.PART_PREFIX}*{store_lib.PART_SUFFIX}")
    base = outputs.join_path(root, model_id).rstrip("/") + "/"
    return sorted({m.path[len(base):].split("/", 1)[0] for m in FileSystems.match([pattern])[0].metadata_list
                   if m.path.startswith(base)})


def _sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def model_file(model: str, name: str) -> Optional[str]:
    """A file of a model folder, or of a hub model (from the local Hugging Face cache or the hub); None if absent."""
    if os.path.isdir(model):
        path = os.path.join(model, name)
        return path if os.path.isfile(path) else None
    from transformers.utils import cached_file
    try:
        return cached_file(model, name, _raise_exceptions_for_missing_entries=False,
                           _raise_exceptions_for_connection_errors=False)
    except Exception:  # noqa: BLE001 - a name the hub does not know: the tokenizer's loading has said so already
        return None


def fingerprint_parts(model: str) -> Dict[str, Optional[str]]:
    """{"config_sha256", "vocab_sha256", "weights_sha256"} of a masked LM; weights_sha256 is None for a folder
    without weights (config and vocabulary alone identify a recorded model)."""
    config = model_file(model, "config.json")
    vocab = {name: _sha256_of(path) for name in VOCAB_NAMES for path in [model_file(model, name)] if path}
    weights: Dict[str, str] = {}
    for index_name in INDEX_NAMES:  # a sharded checkpoint: the index and every shard it names
        index = model_file(model, index_name)
        if index and not weights:
            weights[index_name] = _sha256_of(index)
            with open(index, encoding="utf-8") as handle:
                shards = sorted(set(json.load(handle).get("weight_map", {}).values()))
            for shard in shards:
                path = model_file(model, shard)
                weights[shard] = _sha256_of(path) if path else "missing"
    for name in WEIGHT_NAMES:
        path = None if weights else model_file(model, name)
        if path:
            weights[name] = _sha256_of(path)
            break  # transformers loads model.safetensors first: that file is the model
    return {"config_sha256": _sha256_of(config) if config else "none",
            "vocab_sha256": store_lib.combine_hashes(vocab),
            "weights_sha256": store_lib.combine_hashes(weights) if weights else None}


def prune_model(config: AugmentConfig) -> str:
    """Deletes the answers of --model (`<root>/<model id>/`, every precision and top_k) from the store; a folder
    without weights names the recorded models of its config and vocabulary. Returns the line to print.

    Raises:
      UserError: the store holds no answers of the model.
    """
    root = config.store_root()
    parts = fingerprint_parts(config.model)
    if parts["weights_sha256"] is not None:
        model_ids = [store_lib.ModelFingerprint(**parts).model_id]
    else:
        model_ids = [found.model_id for found in _recorded_like(root, parts)]
    folders = [outputs.join_path(root, model_id) for model_id in model_ids]
    folders = [folder for folder in folders if FileSystems.exists(folder)]
    if not folders:
        raise UserError(f"--candidate_store {root} holds no answers of --model {config.model}")
    freed = sum(store_size(folder)["bytes"] for folder in folders)
    FileSystems.delete(folders)
    return (f"candidate store {root}: deleted the answers of --model {config.model} "
            f"({', '.join(model_ids)}/, {outputs.human_bytes(freed)}); left: "
            f"{outputs.human_bytes(store_size(root)['bytes'])}")


def is_recorded(root: str, fingerprint: store_lib.ModelFingerprint) -> bool:
    """Whether the store records this model (`record_model`: a run checked these very files as a masked LM)."""
    return FileSystems.exists(outputs.join_path(root, fingerprint.model_id, store_lib.RECORD_NAME))


def record_model(root: str, fingerprint: store_lib.ModelFingerprint, name_or_path: str) -> None:
    """Writes `<root>/<model id>/model.json` unless it is there; only for a model checked as a complete masked LM
    (`is_recorded` lets later runs of the same files skip that check)."""
    if not is_recorded(root, fingerprint):
        outputs.write_bytes_atomically(fingerprint.record(name_or_path), outputs.join_path(
            root, fingerprint.model_id), store_lib.RECORD_NAME)


def _recorded_like(root: str, parts: Dict[str, Optional[str]]) -> List[store_lib.ModelFingerprint]:
    """The models recorded in the store with the config and vocabulary of `parts` (`fingerprint_parts`)."""
    return [found for found in recorded_models(root)
            if (found.config_sha256, found.vocab_sha256) == (parts["config_sha256"], parts["vocab_sha256"])]


def recorded_models(root: str) -> List[store_lib.ModelFingerprint]:
    """The fingerprints recorded in a store (records that cannot be read are skipped)."""
    pattern = outputs.join_path(root, "*", store_lib.RECORD_NAME)
    found = []
    for metadata in sorted(FileSystems.match([pattern])[0].metadata_list, key=lambda m: m.path):
        try:
            with FileSystems.open(metadata.path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
                found.append(store_lib.ModelFingerprint.from_record(handle.read()))
        except (OSError, ValueError) as error:
            logging.warning("candidate store: skipping the unreadable model record %s (%s)", metadata.path, error)
    return found


def store_size(root: str) -> Dict[str, int]:
    """{"files", "bytes"} of everything under the store's root (0 and 0 for a store not made yet)."""
    metadata = FileSystems.match([outputs.join_path(root, "**")])[0].metadata_list
    return {"files": len(metadata), "bytes": sum(m.size_in_bytes for m in metadata)}
