import pytest
import torch
from hypothesis import settings

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
