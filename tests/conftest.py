import pytest
import torch
from hypothesis import settings

from sparse_rl.backends import kernels

torch.set_num_threads(1)
settings.register_profile("default", deadline=None)
settings.load_profile("default")


@pytest.fixture(autouse=True, scope="session")
def built_in_auto_rule(tmp_path_factory):
    """Every test sees ``auto``'s built-in rule, whatever this machine has calibrated."""
    from sparse_rl.backends.auto import RULE_PATH_ENV, auto_rule

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(RULE_PATH_ENV, str(tmp_path_factory.getbasetemp() / "no_calibration.json"))
        auto_rule.cache_clear()
        yield
    auto_rule.cache_clear()


@pytest.fixture(autouse=True)
def fresh_auto_rule():
    """A test that points ``auto`` at a calibration of its own leaves no cached rule behind."""
    from sparse_rl.backends.auto import auto_rule

    yield
    auto_rule.cache_clear()


@pytest.fixture(params=kernels.simd_levels() or ["torch"])
def simd(request):  # the level stays set for every example of one test run
    """Every SIMD level this CPU runs (and torch's kernels where the extension is not built)."""
    if request.param == "torch":
        yield request.param
        return
    before = kernels.simd_level()
    kernels.set_simd_level(request.param)
    yield request.param
    kernels.set_simd_level(before)
