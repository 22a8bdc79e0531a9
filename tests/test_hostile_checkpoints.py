"""Issue 24, cause 4: one validator for scorer and restorer checkpoints
(diffiqa/checkpoint_checks.py). Every broken checkpoint is one line naming the file and the
field, never a traceback; the CLI exits 2."""

from __future__ import annotations

import pytest
import torch

from diffiqa.api import DEFAULT_SCORER
from diffiqa.checkpoint_checks import restore_spec
from diffiqa.diffusion.checkpoint import load_restorer
from diffiqa.errors import CheckpointError
from diffiqa.scorer import load_scorer
from tests.cli_helpers import assert_one_line, run_cli
from tests.test_hostile_outputs import images, tiny_restorer


def broken(tmp_path, base, change) -> str:
    raw = torch.load(base, weights_only=True)
    change(raw)
    out = tmp_path / "broken.pt"
    torch.save(raw, out)
    return str(out)


def _set(path: str, value):
    def change(raw):
        *parents, last = path.split(".")
        d = raw
        for k in parents:
            d = d[k]
        if value is KeyError:
            del d[last]
        else:
            d[last] = value
    return change


def _first_conv_weight_of_another_shape(raw):
    key = next(k for k, v in raw["state_dict"].items() if v.ndim == 4)
    raw["state_dict"][key] = torch.zeros(3, *raw["state_dict"][key].shape[1:])


RESTORER_CASES = [
    (_set("config", KeyError), "it has no 'config'"),
    (_set("state_dict", KeyError), "it has no 'state_dict'"),
    (_set("state_dict", [1, 2]), "state_dict is a list, not a dict"),
    (_set("config.crop_size", "48"), "config.crop_size: expected an integer, got the string '48' (remove the quotes)"),
    (_set("config.crop_size", 0), "crop_size=0: must be at least 1"),
    (_set("config.unet.base_channels", 16), "state_dict does not fit its config"),
    (_first_conv_weight_of_another_shape, "of another shape"),
    (_set("config.lr", -1.0), "lr=-1.0: must be > 0"),
    (_set("kind", "something-else"), "not a diffiqa restorer checkpoint (kind='something-else')"),
]


@pytest.mark.parametrize("change, words", RESTORER_CASES)
def test_restorer_checkpoints_are_validated_in_one_line(tmp_path, capsys, change, words):
    path = broken(tmp_path, tiny_restorer(tmp_path / "r.pt"), change)
    with pytest.raises(CheckpointError, match=None) as e:
        load_restorer(path)
    assert str(e.value).startswith(path) and words in str(e.value), str(e.value)
    rc, _, err = run_cli(capsys, "restore", *images(tmp_path / "in", "a.png"), "--out", tmp_path / "out",
                         "--checkpoint", path, "--no-progress")
    assert_one_line(rc, err, path, words)


def test_a_checkpoint_that_is_not_a_dict_or_not_torch(tmp_path):
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="holds a list, not a dict"):
        load_restorer(tmp_path / "list.pt")
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(CheckpointError, match="not a readable restorer checkpoint"):
        load_restorer(tmp_path / "text.pt")


SCORER_CASES = [
    (_set("backbones_sha256", None), "backbone weights are left out but no backbones_sha256"),
    (_set("backbones_sha256", "abc"), "backbones_sha256 is 'abc', not a sha256"),
    (_set("config.use_vcg", "yes"), "config.use_vcg: expected true or false, got the string 'yes'"),
    (_set("config", KeyError), "it has no 'config'"),
    (_set("format_version", 99), "scorer checkpoint format 99"),
]


@pytest.mark.parametrize("change, words", SCORER_CASES)
def test_scorer_checkpoints_are_validated_in_one_line(tmp_path, change, words):
    path = broken(tmp_path, DEFAULT_SCORER, change)
    with pytest.raises(CheckpointError) as e:
        load_scorer(path)
    assert str(e.value).startswith(path) and words in str(e.value), str(e.value)


@pytest.mark.parametrize("change, words", [
    (lambda r: r.pop("crop_size"), "extra.restore has no 'crop_size'"),
    (lambda r: r.update(crop_size=0), "crop_size=0: must be at least 1 pixel"),
    (lambda r: r.update(crop_size=-5), "crop_size=-5"),
    (lambda r: r.update(steps="2"), "extra.restore.steps: expected an integer"),
])
def test_the_scorers_restore_record_is_validated(change, words):
    extra = torch.load(DEFAULT_SCORER, weights_only=True)["extra"]
    change(extra["restore"])
    with pytest.raises(CheckpointError, match="s.pt: ") as e:
        restore_spec(extra, "s.pt")
    assert words in str(e.value)


def test_score_with_a_broken_scorer_is_one_line(tmp_path, capsys):
    path = broken(tmp_path, DEFAULT_SCORER, _set("config.use_vcg", "yes"))
    rc, _, err = run_cli(capsys, "score", *images(tmp_path / "in", "a.png"), "--model", path, "--no-progress")
    assert_one_line(rc, err, path, "use_vcg")
