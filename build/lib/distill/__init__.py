"""TinyBERT distillation: streaming reader, models, losses, trainer."""
