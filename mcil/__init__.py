"""mcil: a reproducible benchmark suite for multimodal class-incremental learning."""

__version__ = "0.1.0"
