"""The data contract between the pipelines and the trainer: Beam-free, torch-free and small.

  errors     the one user-error hierarchy (UserError, InputError) and `describe`
  layout     names and versions: manifest, markers, dataset card, rejects folder, output kinds
  schemas    every output's pyarrow schema, the token-id type rule, the reject record
  manifest   manifest text written and read back, format_version checked
  seeds      the stable hash every seed derives from
  fingerprint the tokenizer fingerprint a manifest records and a reader compares
  tasks      the one task table (GLUE and generic), with every alias
  options    the one option-declaration mechanism (dataclass fields to strict argparse)
  charts     SVG bar and line charts (report/, the trainer's loss curve)
  filesystem the few file operations the claim and the reader need: local, fsspec (Beam's in pipelines/outputs)
  claim      the output claim: an in-progress marker first, --overwrite deletes only what is ours
  finished   the one reader of a finished output: completion marker, manifest, kind, file paths
  overlap    an output is never, and never contains, one of the run's inputs
  compression compressed inputs told by their magic numbers: the one table every reader uses

`__version__` is the project's one version: the package's (pyproject.toml reads it) and every manifest's
`code_version`.
"""

__version__ = "0.2.0"
