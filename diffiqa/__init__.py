"""diffiqa: diffusion-guided no-reference image quality assessment."""

__version__ = "0.1.0"
