"""NR-IQA models as priors for image enhancement (DESIGN §6).

- ``invertible``: ``DiffusionMap`` — G / G^-1 from a diffusion network (by default the packaged
  unconditional denoiser, diffiqa/assets/enhance_map.pt; EDICT with the quiet mix), checkpointed.
- ``priors``: differentiable priors (NIQE, BRISQUE-style, restoration gap, diffiqa) and fusion.
- ``map``: ``EnhanceParams`` and ``enhance`` — the MAP loop (trust-region ascent on the latent).
- ``gate``: the generativity gate (round trip, high-frequency share of a latent perturbation, gain).
- ``images``: ``enhance_images`` — files in, enhanced images / trajectories / plots out.
- ``sheet``: the comparison sheet and table.
"""
