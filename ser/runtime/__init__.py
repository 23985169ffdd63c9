"""The on-device runtime: reads a ``.serq`` model and audio and predicts with numpy alone.

Nothing here may import torch, lightning, hydra or librosa, so that a small device needs
only numpy (and soundfile to decode audio) to run an exported model.
"""
