"""The registry behind create_metric: every shipped quality model by name; a new one is one registration."""

import pytest
import torch
from torch import nn

from diffiqa import registry
from diffiqa.api import create_metric
from diffiqa.errors import ConfigError

torch.set_num_threads(1)


def _photo(size=64):
    g = torch.linspace(0, 1, size)
    img = torch.stack([g.view(1, -1).expand(size, size), g.view(-1, 1).expand(size, size), 0.5 * torch.ones(size, size)])
    return (img + 0.05 * torch.sin(40 * g).view(1, -1)).clamp(0, 1)[None]


def test_every_shipped_model_is_registered_and_enhance_accepts_the_priors():
    from diffiqa.enhance.priors import prior_names

    assert set(registry.names()) == {"diffiqa", "niqe", "brisque", "restoration_gap", "fusion"}
    assert set(prior_names()) == {"diffiqa", "niqe", "brisque", "restoration_gap"}  # fusion = several --prior


@pytest.mark.parametrize("name", ["niqe", "brisque", "fusion"])
def test_create_metric_builds_each_model_and_it_scores(name):
    model = create_metric(name, bounded=True) if name != "fusion" else create_metric("fusion", members=("niqe", "brisque"))
    score = model(_photo())
    assert score.shape == (1,) and torch.isfinite(score).all() and 0 < float(score) < 100


def test_unknown_names_are_refused_in_one_line():
    with pytest.raises(ConfigError, match="unknown metric 'nope'; available"):
        create_metric("nope")
    from diffiqa.enhance.priors import build_prior

    with pytest.raises(ConfigError, match="unknown prior 'fusion'"):
        build_prior("fusion")


def test_a_new_model_is_one_registration(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))

    @registry.register("mean_brightness", description="toy")
    def _mean(**_):
        class Mean(nn.Module):
            name = "mean_brightness"

            def forward(self, x):
                return x.mean((1, 2, 3))

        return Mean()

    from diffiqa.enhance.priors import prior_names

    assert "mean_brightness" in prior_names()
    assert float(create_metric("mean_brightness")(torch.full((1, 3, 8, 8), 0.25))) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="twice"):
        registry.register("mean_brightness")(_mean)
