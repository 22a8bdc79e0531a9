"""The dual-branch scorer (DiffV2IQA §III-C/D): backbones, VCG and VDA branches, blocks."""

from diffiqa.scorer.model import DualBranchScorer, ScorerConfig, build_scorer, load_scorer, save_scorer
from diffiqa.scorer.presets import scorer_preset

__all__ = ["DualBranchScorer", "ScorerConfig", "build_scorer", "load_scorer", "save_scorer", "scorer_preset"]
