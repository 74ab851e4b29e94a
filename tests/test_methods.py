import pytest

from sparse_rl.criteria import GROW_CRITERIA, PRUNE_CRITERIA
from sparse_rl.methods import METHODS, get_method, method_label


def test_presets_name_existing_criteria():
    for preset in METHODS.values():
        assert (preset.prune is None) == (preset.grow is None)
        if preset.updates_topology:
            assert preset.prune in PRUNE_CRITERIA and preset.grow in GROW_CRITERIA


def test_presets_are_the_documented_pairs():
    assert (get_method("rigl").prune, get_method("rigl").grow) == ("magnitude", "gradient")
    assert (get_method("set").prune, get_method("set").grow) == ("set", "random")
    assert (get_method("dst-ee").prune, get_method("dst-ee").grow) == ("magnitude", "ucb")
    assert not get_method("static").updates_topology and not get_method("dense").updates_topology


def test_unknown_method_names_the_allowed_ones():
    allowed = "allowed: rigl, set, mest, dst-ee, static, dense, rlx2, thresholds, halo, ds-td3"
    with pytest.raises(ValueError, match=allowed):
        get_method("lottery")


@pytest.mark.parametrize("sparsity, label", [
    ({"method": "rigl"}, "rigl"),
    ({}, "rigl"),
    ({"method": "rigl", "prune": "snip"}, "rigl+prune-snip"),
    ({"method": "dst-ee", "grow_kwargs": {"eps": 1.0, "c": 0.01}}, "dst-ee+c0.01+eps1"),
    ({"method": "mest", "prune_kwargs": {"gamma": 0.5}, "grow": "gradient"}, "mest+grow-gradient+gamma0.5"),
    ({"method": "thresholds", "threshold_alpha": 1e-4}, "thresholds"),
    ({"method": "thresholds", "threshold_alpha": 0.01}, "thresholds+threshold_alpha0.01"),
    ({"method": "halo", "prune_start": 100, "prune_end": 300}, "halo+prune_end300+prune_start100"),
    ({"method": "ds-td3", "target_rule": "shared"}, "ds-td3+target_ruleshared"),
    ({"method": "rigl", "sparse_init": True}, "rigl+sparse-init"),
    ({"method": "rigl", "sparse_init": False}, "rigl"),
])
def test_method_label_names_every_departure_from_the_preset(sparsity, label):
    assert method_label(sparsity) == label
