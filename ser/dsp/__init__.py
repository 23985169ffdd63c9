"""The torch-free bottom layer: audio decoding and its checks, feature settings, filterbanks,
speaker statistics and the quantization code grid, in numpy only.

Training (``ser.data``, ``ser.quant``) and the on-device runtime (``ser.runtime``) both build on
these modules, so a device that runs ``ser predict`` never needs torch: the layout, not a
convention, keeps it that way (a test imports the runtime with torch blocked).
"""
