"""TinyBERT data augmentation (Algorithm 1 of arXiv:1909.10351) as a pure library: no Beam, no file I/O."""
