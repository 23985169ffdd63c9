"""Weight quantization: fixed bit-widths and the paper's layer-wise adaptive search (LAQ)."""
