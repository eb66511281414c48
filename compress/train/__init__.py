"""Training on device-resident tensors: the loop (`fit`), its recipe and runtime settings, and
the callbacks that watch it (progress bar, per-epoch metrics).
"""
