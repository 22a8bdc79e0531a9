"""NR-IQA models as priors for image enhancement (DESIGN §6).

- ``invertible``: ``DiffusionMap`` — G / G^-1 from the restorer (DDIM or EDICT), checkpointed.
- ``priors``: differentiable priors (NIQE, BRISQUE-style, restoration gap, diffiqa) and fusion.
- ``map``: ``EnhanceParams`` and ``enhance`` — the MAP loop (Adam on the latent).
- ``images``: ``enhance_images`` — files in, enhanced images / trajectories / plots out.
- ``sheet``: the comparison sheet and table.
"""
