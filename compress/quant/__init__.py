"""Quantization backends: int8 through torch.ao, N-bit grids, weight-sharing k-means."""
