"""The reference trainer (TinyBERT's general_distill.py and task_distill.py, huawei-noah/Pretrained-Language-Model)
imported from a folder the user fetched, adapted in memory (never in its files), and fed our models and data in the
formats it reads. Used by bench/reference_losses.py.

Adaptations, each because the reference cannot otherwise run here or read the same models:
  - stubs for boto3/botocore (its download helper imports them; nothing is downloaded), numpy's removed `np.int`;
  - `fit_size` defaults to the teacher's width (its default, 768, assumes BERT-base);
  - its classifier's `relu(pooled)` becomes `pooled` while `_TorchWithoutReluHead.active`, so that it reads a teacher
    fine-tuned with transformers' head as that teacher computes (docs/distill.md, difference 4);
  - models as `pytorch_model.bin` with `bert.`-prefixed keys and `fit_dense.*`, `vocab.txt` beside `config.json`;
  - the user's task served through its SST-2 processor slot (it knows only the GLUE processors);
  - with `lockstep`, its sampler sequential and its BertAdam replaced by our update rule.
"""

import json
import logging
import os
import sys
import types


def load_reference(path, *, fit_size, log_dir):
    """Imports general_distill, task_distill and transformer.modeling from `path`, adapted (module docstring)."""
    import numpy as np
    for name in ("boto3", "botocore", "botocore.exceptions"):  # only its S3 download helper uses them
        if name not in sys.modules:
            try:
                __import__(name)
            except ImportError:
                stub = types.ModuleType(name)
                stub.ClientError = type("ClientError", (Exception,), {})
                sys.modules[name] = stub
    if not hasattr(np, "int"):
        np.int = int  # removed in numpy 1.24; general_distill builds its arrays with it
    sys.path.insert(0, path)
    os.environ.setdefault("TQDM_DISABLE", "1")
    here, root = os.getcwd(), logging.getLogger()
    handlers, level = list(root.handlers), root.level
    os.chdir(log_dir)  # task_distill.py opens debug_layer_loss.log in the working directory when imported
    try:
        import general_distill
        import task_distill
        from transformer import modeling
    finally:
        os.chdir(here)
        for handler in [h for h in root.handlers if h not in handlers]:  # its stdout and file handlers on the root
            root.removeHandler(handler)
            handler.close()
        root.setLevel(level)
    for name in ("general_distill", "task_distill", "transformer", "transformer.modeling"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for cls in (modeling.TinyBertForPreTraining, modeling.TinyBertForSequenceClassification):
        _default_fit_size(cls, fit_size)
    modeling.torch = _TorchWithoutReluHead()  # only the classifier heads call torch.relu in modeling.py
    return types.SimpleNamespace(general=general_distill, task=task_distill, modeling=modeling)



def _default_fit_size(cls, size):
    init = cls.__init__

    def __init__(self, config, *args, fit_size=size, **kwargs):
        init(self, config, *args, fit_size=fit_size, **kwargs)
    cls.__init__ = __init__



class _TorchWithoutReluHead:
    """torch, as modeling.py sees it, with relu the identity while `active`: its head then computes
    classifier(pooled), as ours and as the head our teacher was fine-tuned with."""
    active = True

    def __getattr__(self, name):
        import torch
        return (lambda tensor: tensor) if name == "relu" and self.active else getattr(torch, name)



class _OurUpdateRule:
    """BertAdam's signature with our trainer's update: AdamW (epsilon 1e-6, the groups' weight decay), one global-norm
    clip at 1.0 and our schedule (linear warm-up and decay, or constant where BertAdam's schedule is 'none')."""

    def __init__(self, params, lr, warmup=-1, t_total=-1, schedule="warmup_linear", **unused):
        import torch
        from distill import config as config_lib
        self.params = [p for group in params for p in group["params"]]
        self.optimizer = torch.optim.AdamW(params, lr=lr, eps=1e-6)
        linear = schedule == "warmup_linear"
        warmup_steps = int(warmup * t_total) if linear else 0
        kind = config_lib.LINEAR if linear else config_lib.CONSTANT
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda step: config_lib.lr_factor(
            step, schedule=kind, warmup_steps=warmup_steps, total_steps=t_total))

    def step(self):
        import torch
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.optimizer.step()
        self.scheduler.step()

    def zero_grad(self):
        self.optimizer.zero_grad(set_to_none=True)



def run_reference(module, argv, *, lockstep):
    """Runs `module.main()` with `argv`; returns its per-step losses [{"loss", "att_loss"?, "rep_loss"?}].

    The total is read where the loop calls backward(); att/rep from its MSELoss calls (student layers M: M attention
    terms, then M + 1 hidden-state terms per step)."""
    import torch
    from torch.utils.data import SequentialSampler
    totals, terms = [], []
    original_backward, saved = torch.Tensor.backward, {}

    class RecordingMSE(torch.nn.MSELoss):
        def forward(self, input, target):  # pylint: disable=redefined-builtin
            value = super().forward(input, target)
            terms.append(float(value.detach()))
            return value

    def backward(self, *args, **kwargs):
        if self.dim() == 0:
            totals.append(float(self.detach()))
        return original_backward(self, *args, **kwargs)

    replace = {"MSELoss": RecordingMSE}
    if lockstep:
        replace.update(RandomSampler=SequentialSampler, BertAdam=_OurUpdateRule)
    for name, value in replace.items():
        saved[name] = getattr(module, name)
        setattr(module, name, value)
    argv_before, sys.argv = sys.argv, [module.__file__] + list(argv)
    torch.Tensor.backward = backward
    try:
        module.main()
    finally:
        torch.Tensor.backward = original_backward
        sys.argv = argv_before
        for name, value in saved.items():
            setattr(module, name, value)
    per_step = len(terms) // len(totals) if totals and terms else 0
    records = []
    for index, total in enumerate(totals):
        record = {"loss": total}
        if per_step:
            chunk = terms[index * per_step:(index + 1) * per_step]
            layers = per_step // 2
            record.update(att_loss=sum(chunk[:layers]), rep_loss=sum(chunk[layers:]))
        records.append(record)
    return records



def to_reference_folder(source, target, *, vocab_dir, dropout=None):
    """`source` (a save_pretrained folder, fit_dense.pt beside it or not) as the reference reads a model: config.json,
    pytorch_model.bin with `bert.`-prefixed encoder keys and fit_dense.*, vocab.txt. `dropout`: set both rates."""
    import shutil
    import torch
    from safetensors.torch import load_file
    os.makedirs(target)
    state = load_file(os.path.join(source, "model.safetensors"))
    if not any(key.startswith("bert.") for key in state):  # a BertModel folder: the reference's models hold `bert`
        state = {f"bert.{key}": value for key, value in state.items()}
    state = {key: value for key, value in state.items() if not key.endswith("position_ids")}
    fit_path = os.path.join(source, "fit_dense.pt")
    if os.path.exists(fit_path):
        for key, value in torch.load(fit_path, map_location="cpu", weights_only=True).items():
            state[f"fit_dense.{key}"] = value
    torch.save(state, os.path.join(target, "pytorch_model.bin"))
    with open(os.path.join(source, "config.json"), encoding="utf-8") as handle:
        config = json.load(handle)
    if dropout is not None:
        config.update(hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    with open(os.path.join(target, "config.json"), "w", encoding="utf-8") as handle:
        json.dump(config, handle, indent=2)
    shutil.copy(os.path.join(vocab_dir, "vocab.txt"), os.path.join(target, "vocab.txt"))
    return target



def write_pregenerated(directory, rows, vocab_file, max_seq_len):
    """general_distill.py's input: epoch_0.json (tokens and segment ids, no masked-LM labels) and its metrics."""
    with open(vocab_file, encoding="utf-8") as handle:
        tokens = [line.rstrip("\n") for line in handle]
    os.makedirs(directory)
    with open(os.path.join(directory, "epoch_0.json"), "w", encoding="utf-8") as handle:
        for ids, segments in rows:
            handle.write(json.dumps({"tokens": [tokens[i] for i in ids], "segment_ids": segments,
                                     "is_random_next": False, "masked_lm_positions": [],
                                     "masked_lm_labels": []}) + "\n")
    with open(os.path.join(directory, "epoch_0_metrics.json"), "w", encoding="utf-8") as handle:
        json.dump({"num_training_examples": len(rows), "max_seq_len": max_seq_len}, handle)
    return directory



class ExampleServer:
    """Stands in for the reference's SST-2 processor: serves the given training rows, in their order, and the dev
    set, with the teacher's labels."""

    def __init__(self, reference, train, dev, labels):
        make = reference.task.InputExample
        self.train = [make(guid=f"train-{i}", text_a=text, label=label) for i, (text, label) in enumerate(train)]
        self.dev = [make(guid=f"dev-{i}", text_a=text, label=label) for i, (text, label) in enumerate(dev)]
        self.labels = list(labels)

    def get_train_examples(self, data_dir):
        return self.train

    def get_aug_examples(self, data_dir):
        return self.train

    def get_dev_examples(self, data_dir):
        return self.dev

    def get_labels(self):
        return self.labels



def reference_eval(reference, model_dir, server, max_seq_len):
    """The reference's own do_eval of a TinyBertForSequenceClassification folder on the dev set."""
    import torch
    from torch.utils.data import DataLoader
    task = reference.task
    tokenizer = task.BertTokenizer.from_pretrained(model_dir, do_lower_case=True)
    features = task.convert_examples_to_features(server.dev, server.labels, max_seq_len, tokenizer, "classification")
    data, labels = task.get_tensor_data("classification", features)
    model = task.TinyBertForSequenceClassification.from_pretrained(model_dir, num_labels=len(server.labels)).eval()
    loader = DataLoader(data, batch_size=32)
    return task.do_eval(model, "sst-2", loader, torch.device("cpu"), "classification", labels, len(server.labels))



def last_acc(path):
    """The last `acc = ...` line of the reference's eval_results.txt."""
    with open(path, encoding="utf-8") as handle:
        values = [float(line.split("=", 1)[1]) for line in handle if line.startswith("acc =")]
    return values[-1] if values else float("nan")



def reference_folder_from_step(output_dir, target):
    """The reference general run's last step_N_pytorch_model.bin as a folder its task script reads."""
    import shutil
    names = sorted((name for name in os.listdir(output_dir) if name.startswith("step_")),
                   key=lambda name: int(name.split("_")[1]))
    os.makedirs(target)
    shutil.copy(os.path.join(output_dir, names[-1]), os.path.join(target, "pytorch_model.bin"))
    for name in ("config.json", "vocab.txt"):
        shutil.copy(os.path.join(output_dir, name), os.path.join(target, name))
    return target
