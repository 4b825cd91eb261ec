"""Teacher and student models, and pre-softmax attention scores without copying BERT's code.

The scores come from an attention function registered with transformers' `AttentionInterface` (and the boolean
mask function that goes with it): it computes `QK^T * scaling`, fills masked keys with -10000 as the reference
does, and returns those scores as the layer's "attention weights", so `output_attentions=True` hands them back.
"""

import json
import logging
import os
from typing import List, Optional, Tuple

import torch
from torch import nn

from contract.errors import UserError, describe

logger = logging.getLogger(__name__)

SCORES_ATTENTION = "tinybert_scores"
FIT_DENSE_NAME = "fit_dense.pt"
MASKED_FILL = -10000.0

STUDENT_PRESETS = {
    "4L-312H": {"num_hidden_layers": 4, "hidden_size": 312, "intermediate_size": 1200, "num_attention_heads": 12},
    "6L-768H": {"num_hidden_layers": 6, "hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12},
}
STUDENT_PRESETS["4L-312H-1200I"] = STUDENT_PRESETS["4L-312H"]
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def _looks_like_path(spec: str) -> bool:
    """A hub name is "name" or "owner/name"; anything else (absolute, ./, ~, deeper) is meant as a local path."""
    return (os.path.isabs(spec) or spec.startswith((".", "~")) or spec.count("/") > 1
            or (os.sep != "/" and os.sep in spec) or spec.endswith((".json", ".pt", ".bin", ".safetensors")))


def has_weights(directory: str) -> bool:
    return any(os.path.isfile(os.path.join(directory, name)) for name in WEIGHT_FILES)


def check_model_source(spec: str, option: str, *, config_file_ok: bool = False) -> None:
    """Refuses, before anything is loaded, a model folder that cannot hold a model: missing, a file, or without
    config.json or weights. Hub names are left to `from_pretrained`.

    Args:
      spec: what the user passed.
      option: the option it came from ("--teacher"), named in the message.
      config_file_ok: a config.json file is accepted (a student built from random weights).

    Raises:
      UserError: naming the folder or file and what to pass instead.
    """
    if os.path.isdir(spec):
        if not os.path.isfile(os.path.join(spec, "config.json")):
            raise UserError(f"{option} {spec} has no config.json; point it at a directory saved with save_pretrained")
        if not has_weights(spec):
            extra = (f", or pass {os.path.join(spec, 'config.json')} to start from random weights"
                     if config_file_ok else "")
            raise UserError(f"{option} {spec} has config.json but no weights ({' or '.join(WEIGHT_FILES[::2])}); "
                            f"point it at a directory saved with save_pretrained{extra}")
    elif os.path.isfile(spec):
        if not config_file_ok:
            raise UserError(f"{option} {spec} is a file; pass the model's directory (save_pretrained) or a hub name")
    elif _looks_like_path(spec) and spec not in STUDENT_PRESETS:
        raise UserError(f"{option} {spec}: no such file or directory")


def check_vocab(config, needed: int, what: str) -> None:
    """Refuses a model whose embedding table is smaller than the token ids the data holds.

    Raises:
      UserError: vocab_size < needed.
    """
    if int(config.vocab_size) < needed:
        raise UserError(f"{what} has vocab_size {config.vocab_size} but the data's tokenizer has {needed} tokens "
                        f"(ids up to {needed - 1}); use a model trained with that tokenizer, or regenerate the data "
                        "with the model's")


def _scores_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **unused_kwargs):
    """Eager attention that returns the pre-softmax scores instead of the probabilities."""
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling  # (batch, heads, seq, seq)
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:  # True = attend
            scores = scores.masked_fill(~attention_mask, MASKED_FILL)
        else:  # additive float mask (0 or dtype min): cap at the reference's -10000
            scores = scores + attention_mask.clamp(min=MASKED_FILL).to(scores.dtype)
    probs = torch.nn.functional.softmax(scores, dim=-1)
    probs = torch.nn.functional.dropout(probs, p=dropout, training=module.training)
    output = torch.matmul(probs, value).transpose(1, 2).contiguous()  # (batch, seq, heads, head_dim)
    return output, scores


def register_scores_attention() -> None:
    """Registers the scores-returning attention (idempotent); call before building or loading models."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
    AttentionInterface.register(SCORES_ATTENTION, _scores_attention)
    AttentionMaskInterface.register(SCORES_ATTENTION, sdpa_mask)  # boolean mask, None when nothing is padded


def _from_pretrained(model_class, name_or_path: str, **kwargs):
    """`model_class.from_pretrained(..., output_loading_info=True)` without transformers' load report: the callers
    say in one line of their own what a missing task head means for the run (the report's "Consider training on your
    downstream task" is wrong for a teacher, and expected when fine-tuning or in the intermediate stage)."""
    hf_logger = logging.getLogger("transformers")
    level = hf_logger.level
    hf_logger.setLevel(logging.ERROR)
    try:
        return model_class.from_pretrained(name_or_path, output_loading_info=True, **kwargs)
    finally:
        hf_logger.setLevel(level)


def _missing_head(loading_info) -> List[str]:
    return sorted(key for key in (loading_info or {}).get("missing_keys", []) if key.startswith("classifier."))


def load_teacher(name_or_path: str, *, classification: bool, num_labels: Optional[int] = None) -> nn.Module:
    """Loads a Hugging Face BERT teacher, frozen, in eval mode, returning attention scores.

    Args:
      name_or_path: hub name or directory.
      classification: load `BertForSequenceClassification` (task distillation) rather than `BertModel`.
      num_labels: expected label count for a classification teacher.

    Raises:
      UserError: it cannot be loaded or its label count differs.
    """
    from transformers import BertForSequenceClassification, BertModel
    register_scores_attention()
    model_class = BertForSequenceClassification if classification else BertModel
    try:
        model, info = _from_pretrained(model_class, name_or_path, attn_implementation=SCORES_ATTENTION)
    except Exception as error:  # pylint: disable=broad-except  # OSError, ValueError, SafetensorError...: one line
        raise UserError(f"cannot load teacher {name_or_path!r} ({describe(error)}); pass a directory saved with "
                        "save_pretrained or a hub name") from error
    if classification and warn_if_untrained_head(model, info, name_or_path) and num_labels is not None \
            and model.config.num_labels != num_labels:  # its head is random anyway: give it the task's size
        model, _ = _from_pretrained(model_class, name_or_path, attn_implementation=SCORES_ATTENTION,
                                    num_labels=num_labels)
    if classification and num_labels is not None and model.config.num_labels != num_labels:
        raise UserError(f"teacher {name_or_path} has {model.config.num_labels} labels but the task has {num_labels}; "
                        "pass a teacher fine-tuned on this task")
    model.eval()
    model.requires_grad_(False)
    return model


def warn_if_untrained_head(model, loading_info, name_or_path: str) -> Optional[str]:
    """Warns (and returns the cause) when a task teacher's classifier was not in its weights: e.g. a BertModel or
    BertForMaskedLM passed as a task teacher, whose head transformers initialises at random."""
    missing = _missing_head(loading_info)
    architectures = list(getattr(model.config, "architectures", None) or [])
    cause = None
    if missing:
        cause = (f"its weights hold no task head ({', '.join(sorted(missing))} newly initialised; saved as "
                 f"{', '.join(architectures) or 'an unknown architecture'})")
    elif architectures and not any(name.endswith("ForSequenceClassification") for name in architectures):
        cause = f"its config.json names {', '.join(architectures)}, not a sequence classifier"
    if cause:
        logger.warning("teacher %s looks untrained for the task: %s; fine-tune it first (python -m distill.run "
                       "finetune) or pass a fine-tuned classifier", name_or_path, cause)
    return cause


def is_default_label_names(id2label, count: int) -> bool:
    """transformers' placeholder names LABEL_0.. (what a config gets when nobody named the labels)."""
    names = [str(id2label.get(i, id2label.get(str(i), ""))) for i in range(count)] if id2label else []
    return not names or names == [f"LABEL_{i}" for i in range(count)]


def label_permutation(id2label, labels: Optional[Tuple[str, ...]], what: str) -> Optional[List[int]]:
    """Where a classifier's outputs name the task's labels in another order: for each task label (in the task's
    order), the output index that holds it; None when the order is the task's or the names are placeholders.

    Raises:
      UserError: the classifier names other labels than the task's.
    """
    if labels is None or not id2label:
        return None
    count = len(id2label)
    if is_default_label_names(id2label, count):
        return None
    names = [str(id2label.get(i, id2label.get(str(i)))) for i in range(count)]
    if names == list(labels):
        return None
    if sorted(names) != sorted(labels):
        raise UserError(f"{what} names its labels {names} (config.json id2label) but the task's are {list(labels)}; "
                        "pass a classifier fine-tuned on this task, or the task's --label_list")
    order = [names.index(label) for label in labels]
    logger.info("%s names its labels %s: its logits are reordered to the task's order %s", what, names, list(labels))
    return order


def student_config(spec: str, teacher_config):
    """A BertConfig for the student: a preset name, a config.json path, or a model directory.

    Vocabulary, positions and token types always come from the teacher, which reads the same token ids.
    """
    from transformers import BertConfig
    if spec in STUDENT_PRESETS:
        config = BertConfig(**STUDENT_PRESETS[spec])
    elif os.path.isfile(spec) or os.path.isdir(spec):
        try:
            if os.path.isfile(spec):
                with open(spec, encoding="utf-8") as handle:
                    config = BertConfig(**json.load(handle))
            else:
                config = BertConfig.from_pretrained(spec)
        except (OSError, ValueError, TypeError) as error:  # not JSON, not an object, unknown fields' types
            raise UserError(f"--student {spec}: not a readable BERT config ({describe(error)}); pass a preset, a "
                            "config.json or a saved student directory") from error
        if int(config.vocab_size) != int(teacher_config.vocab_size) and os.path.isdir(spec):
            raise UserError(f"--student {spec} has vocab_size {config.vocab_size} but the teacher "
                            f"{teacher_config.vocab_size}; a saved student keeps its embeddings, so it needs the "
                            "teacher's vocabulary: pass a student distilled from this teacher, or a preset")
    else:
        raise UserError(f"--student {spec!r} is neither a preset ({', '.join(sorted(STUDENT_PRESETS))}), "
                        "a config.json nor a model directory")
    config.vocab_size = teacher_config.vocab_size
    config.max_position_embeddings = teacher_config.max_position_embeddings
    config.type_vocab_size = teacher_config.type_vocab_size
    if config.num_attention_heads != teacher_config.num_attention_heads:
        raise UserError(f"student has {config.num_attention_heads} attention heads and the teacher "
                        f"{teacher_config.num_attention_heads}; attention-score distillation needs the same count")
    return config


class Student(nn.Module):
    """The student BERT plus the `fit_dense` projection of its hidden states to the teacher's width."""

    def __init__(self, bert: nn.Module, teacher_hidden: int):
        super().__init__()
        self.bert = bert
        self.fit_dense = nn.Linear(bert.config.hidden_size, teacher_hidden)
        # As the reference initialises every BERT weight: N(0, initializer_range = 0.02), bias 0 (not nn.Linear's
        # uniform default).
        nn.init.normal_(self.fit_dense.weight, mean=0.0, std=getattr(bert.config, "initializer_range", 0.02))
        nn.init.zeros_(self.fit_dense.bias)

    def forward(self, *, project: bool = True, **inputs):
        """BERT's outputs as a dict, plus `projected_hidden_states` (each hidden state through fit_dense) when `project`.

        The projection happens inside forward so that DDP sees fit_dense's use (it must not be called outside).
        """
        outputs = dict(self.bert(**inputs))  # a plain dict: DDP rebuilds outputs and ModelOutput rejects new keys
        if project and outputs.get("hidden_states") is not None:
            outputs["projected_hidden_states"] = tuple(self.fit_dense(h) for h in outputs["hidden_states"])
        return outputs


def build_student(spec: str, teacher: nn.Module, *, classification: bool,
                  num_labels: Optional[int] = None, labels: Optional[Tuple[str, ...]] = None,
                  from_teacher: bool = False) -> Student:
    """Builds (preset/config) or loads (directory) the student; loads `fit_dense` kept beside a saved student.

    Args:
      from_teacher: a built student starts from the teacher's weights (`copy_teacher_layers`), not random ones.

    Raises:
      UserError: a bad spec, heads that differ from the teacher's, or `from_teacher` with a saved student.
    """
    if from_teacher and os.path.isdir(spec):
        raise UserError(f"--student_init teacher builds a new student from the teacher's layers, but --student {spec} "
                        "is a saved model (its weights would be replaced); pass a preset or a config.json")
    from transformers import BertForSequenceClassification, BertModel
    register_scores_attention()
    config = student_config(spec, teacher.config)
    model_class = BertForSequenceClassification if classification else BertModel
    if classification:
        config.num_labels = num_labels or teacher.config.num_labels
        config.problem_type = teacher.config.problem_type
        if labels:  # the task's names in the task's order (the teacher's logits are put in that order)
            config.id2label = {i: label for i, label in enumerate(labels)}
            config.label2id = {label: i for i, label in enumerate(labels)}
        else:
            config.id2label, config.label2id = teacher.config.id2label, teacher.config.label2id
    if os.path.isdir(spec):
        check_model_source(spec, "--student", config_file_ok=True)
        try:
            bert, info = _from_pretrained(model_class, spec, config=config, attn_implementation=SCORES_ATTENTION)
        except Exception as error:  # pylint: disable=broad-except  # damaged weights: one line
            raise UserError(f"cannot load student {spec!r} ({describe(error)}); pass a directory saved by "
                            "distill.run or save_pretrained") from error
        if classification and _missing_head(info):
            logger.info("student %s has no task head yet (%s new): the intermediate stage leaves it untrained, the "
                        "prediction stage trains it", spec, ", ".join(_missing_head(info)))
    else:
        config._attn_implementation = SCORES_ATTENTION
        bert = model_class(config)
    student = Student(bert, teacher.config.hidden_size)
    if from_teacher:
        copy_teacher_layers(student, teacher)
    fit_path = os.path.join(spec, FIT_DENSE_NAME) if os.path.isdir(spec) else ""
    if fit_path and os.path.exists(fit_path):
        try:
            state = torch.load(fit_path, map_location="cpu", weights_only=True)
        except Exception as error:  # pylint: disable=broad-except  # weights_only refuses code; garbage: one line
            raise UserError(f"{fit_path} is not a fit_dense state this trainer can load ({describe(error)}); delete "
                            "it to start fit_dense afresh") from error
        if not isinstance(state, dict) or not torch.is_tensor(state.get("weight")):
            raise UserError(f"{fit_path} holds no fit_dense weight; delete it to start fit_dense afresh")
        if state["weight"].shape == student.fit_dense.weight.shape:
            student.fit_dense.load_state_dict(state)
        else:
            logger.warning("ignoring %s: its shape %s does not fit this teacher", fit_path, tuple(state["weight"].shape))
    return student


def copy_teacher_layers(student: Student, teacher: nn.Module) -> List[int]:
    """Starts a new student from its teacher (not the reference's random start; a common practice since, e.g.
    DistilBERT): the embeddings, the pooler and, for student layer i, teacher layer (i + 1) * k - 1, the layer whose
    attention it learns (`losses.layer_mapping`); the task head too when both have one of the same shape; fit_dense
    the identity, so the embedding term of the hidden-state loss starts at 0.

    Returns:
      The teacher layer indices copied, one per student layer.

    Raises:
      UserError: the student's hidden size, intermediate size or head count is not the teacher's, or the teacher's
        depth is not a multiple of the student's.
    """
    from distill.losses import layer_mapping
    mine, theirs = getattr(student.bert, "bert", student.bert), getattr(teacher, "bert", teacher)
    for name in ("hidden_size", "intermediate_size", "num_attention_heads"):
        if getattr(mine.config, name) != getattr(theirs.config, name):
            raise UserError(f"--student_init teacher copies the teacher's layers, so the student needs the teacher's "
                            f"{name} ({getattr(theirs.config, name)}), not {getattr(mine.config, name)}")
    try:
        layers, _ = layer_mapping(theirs.config.num_hidden_layers, mine.config.num_hidden_layers)
    except ValueError as error:
        raise UserError(f"--student_init teacher: {error}") from error
    mine.embeddings.load_state_dict(theirs.embeddings.state_dict())
    for index, layer in enumerate(layers):
        mine.encoder.layer[index].load_state_dict(theirs.encoder.layer[layer].state_dict())
    if getattr(mine, "pooler", None) is not None and getattr(theirs, "pooler", None) is not None:
        mine.pooler.load_state_dict(theirs.pooler.state_dict())
    head, teacher_head = getattr(student.bert, "classifier", None), getattr(teacher, "classifier", None)
    if head is not None and teacher_head is not None and head.weight.shape == teacher_head.weight.shape:
        head.load_state_dict(teacher_head.state_dict())
    with torch.no_grad():
        student.fit_dense.weight.copy_(torch.eye(student.fit_dense.weight.shape[0]))
        student.fit_dense.bias.zero_()
    logger.info("student starts from the teacher: embeddings, pooler and teacher layers %s (0-based), fit_dense the "
                "identity", layers)
    return layers


TASK_FILE = "tinybert_task.json"


def build_classifier(name_or_path: str, *, labels: Optional[Tuple[str, ...]]) -> Student:
    """A `BertForSequenceClassification` to fine-tune (a teacher to start from), from a hub name or directory,
    wrapped as a Student (its fit_dense is unused) so the one trainer runs it; the head is the task's.

    Raises:
      UserError: it cannot be loaded.
    """
    from transformers import BertForSequenceClassification
    register_scores_attention()
    num_labels = len(labels) if labels else 1
    extra = ({"id2label": dict(enumerate(labels)), "label2id": {label: i for i, label in enumerate(labels)}}
             if labels else {"problem_type": "regression"})
    try:
        bert, info = _from_pretrained(
            BertForSequenceClassification, name_or_path, num_labels=num_labels, ignore_mismatched_sizes=True, attn_implementation=SCORES_ATTENTION,
            **extra)
    except Exception as error:  # pylint: disable=broad-except  # one line
        raise UserError(f"cannot load a model to fine-tune from {name_or_path!r} ({describe(error)}); pass a hub "
                        "name or a directory saved with save_pretrained") from error
    if _missing_head(info) or info.get("mismatched_keys"):
        logger.info("%s: the task head is new (random weights, %d outputs); fine-tuning trains it", name_or_path,
                    num_labels)
    return Student(bert, bert.config.hidden_size)


def save_student(student: Student, tokenizer, output_dir: str, task: Optional[dict] = None) -> None:
    """Saves the student with `save_pretrained` (loadable by transformers directly), its tokenizer and fit_dense;
    with `task` (a classifier's task: text fields, labels, metrics), also `tinybert_task.json` beside config.json."""
    os.makedirs(output_dir, exist_ok=True)
    if task is not None:
        with open(os.path.join(output_dir, TASK_FILE), "w", encoding="utf-8") as handle:
            json.dump(task, handle, indent=2)
    student.bert.save_pretrained(output_dir)  # the config does not record our attention function
    tokenizer.save_pretrained(output_dir)
    torch.save(student.fit_dense.state_dict(), os.path.join(output_dir, FIT_DENSE_NAME))


def forward_with_internals(model: nn.Module, batch, **kwargs) -> Tuple[Optional[torch.Tensor], tuple, tuple]:
    """Runs a BERT (base or classifier) or a Student and returns (logits or None, attention scores, hidden states);
    a Student's hidden states come back projected by fit_dense."""
    outputs = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                    token_type_ids=batch["token_type_ids"], output_attentions=True, output_hidden_states=True,
                    **kwargs)
    hidden = outputs.get("projected_hidden_states") or outputs.get("hidden_states")
    return outputs.get("logits"), outputs.get("attentions"), hidden
