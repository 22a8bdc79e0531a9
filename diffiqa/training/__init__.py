"""Training the scorer from the restore cache (one model per split, resumable).

``TrainParams`` and ``train_split`` live in :mod:`diffiqa.training.trainer`; they are
re-exported lazily, so that importing one small part (``ridge``, ``datasets``) does not load
the trainer and the scorer with it.
"""

__all__ = ["TrainParams", "train_split"]


def __getattr__(name):
    if name in __all__:
        from diffiqa.training import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module 'diffiqa.training' has no attribute {name!r}")
