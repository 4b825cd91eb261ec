"""Beam-free corpus library: wiki markup, documents and sentences, tokenizer loading, general-distillation instances."""
