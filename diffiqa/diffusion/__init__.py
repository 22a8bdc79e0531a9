"""Diffusion restorer: cosine schedule, SR3 conditional U-Net, samplers, training."""
