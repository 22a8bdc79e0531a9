"""Content-disjoint, seeded splits."""

import numpy as np
import pytest

from diffiqa.data.splits import PROTOCOLS, make_splits
from diffiqa.errors import ConfigError


def _content(n_contents=50, per=4):
    # rows of one content are spread through the table, as in real indexes
    return [f"c{(i * 7) % n_contents}" for i in range(n_contents * per)]


@pytest.mark.parametrize("protocol", sorted(PROTOCOLS))
def test_parts_are_content_disjoint_and_cover_every_row(protocol):
    content = np.asarray(_content())
    out = make_splits(content, protocol=protocol, n_splits=5, seed=3)
    assert len(out["splits"]) == 5 and out["seeds"] == [3, 4, 5, 6, 7]
    for split in out["splits"]:
        parts = [set(split[p]) for p in ("train", "val", "test")]
        assert sum(len(p) for p in parts) == len(content)
        assert set().union(*parts) == set(range(len(content)))
        contents = [set(content[sorted(p)]) for p in parts]
        assert not (contents[0] & contents[1]) and not (contents[0] & contents[2]) and not (contents[1] & contents[2])
        assert all(len(p) > 0 for p in parts)


@pytest.mark.parametrize("protocol", sorted(PROTOCOLS))
def test_ratios_by_content(protocol):
    content = np.asarray(_content(n_contents=100))
    split = make_splits(content, protocol=protocol, n_splits=1, seed=0, val_fraction=0.1)["splits"][0]
    n = {p: len(set(content[split[p]])) for p in ("train", "val", "test")}
    train, val, test = PROTOCOLS[protocol]
    if val == 0:  # 8:2: val is 10 % of the training contents
        val, train = train * 0.1, train * 0.9
    for part, frac in zip(("train", "val", "test"), (train, val, test)):
        assert abs(n[part] / 100 - frac) <= 0.02, (part, n)


def test_same_seed_same_splits_other_seed_other_splits():
    content = _content()
    a = make_splits(content, n_splits=3, seed=11)
    assert a == make_splits(content, n_splits=3, seed=11)
    b = make_splits(content, n_splits=3, seed=12)
    assert a["splits"][0]["test"] != b["splits"][0]["test"]
    # repeats within one call differ from each other too
    assert a["splits"][0]["test"] != a["splits"][1]["test"]


def test_no_val_when_fraction_zero():
    split = make_splits(_content(), protocol="8:2", n_splits=1, val_fraction=0.0)["splits"][0]
    assert split["val"] == [] and split["train"] and split["test"]


def test_bad_protocol_and_too_few_contents():
    with pytest.raises(ConfigError, match="unknown split protocol"):
        make_splits(["a", "b"], protocol="5:5")
    with pytest.raises(ConfigError, match="too few"):
        make_splits(["a", "a", "b"], protocol="7:1:2")
