"""ser: lightweight speech emotion recognition with layer-wise adaptive quantization."""

__version__ = "0.1.0"
