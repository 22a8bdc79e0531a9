"""diffiqa: diffusion-guided no-reference image quality assessment.

`diffiqa.create_metric("diffiqa", checkpoint=None)` returns an `nn.Module` scoring images
(paths or (N,3,H,W) tensors in [0,1]); higher is better.
"""

__version__ = "0.1.0"
__all__ = ["create_metric", "__version__"]


def __getattr__(name):
    # Lazy: `import diffiqa` must not import torch/timm (the CLI's --help stays fast).
    if name == "create_metric":
        from diffiqa.api import create_metric

        return create_metric
    raise AttributeError(f"module 'diffiqa' has no attribute {name!r}")
