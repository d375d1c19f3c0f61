"""KL coefficient controllers: updates worked out by hand."""

import pytest
import torch

from ift.objectives.kl_control import AdaptiveKLController, FixedKLController


def test_fixed_controller_never_moves_and_keeps_its_own_coefficient():
    ctl = FixedKLController(0.05)
    assert ctl.update(100.0, 512) == 0.05 and ctl.value == 0.05
    other = FixedKLController(0.3)
    other.load_state_dict(ctl.state_dict())
    assert other.value == 0.3  # a fixed coefficient has no state: a resumed run's configured one wins
    with pytest.raises(ValueError):
        FixedKLController(-1.0)


def test_adaptive_controller_hand_computed():
    ctl = AdaptiveKLController(init_coef=0.1, target=6.0, horizon=10000)
    # KL 9 is 50% above target: error = clip(9/6 - 1 = 0.5, -0.2, 0.2) = 0.2;
    # factor = 1 + 0.2 * 256 / 10000 = 1.00512 -> beta = 0.100512
    assert ctl.update(9.0, 256) == pytest.approx(0.100512, rel=1e-12)
    # KL 5.4: error = 5.4/6 - 1 = -0.1 (inside the clip); factor = 1 - 0.1 * 1000/10000 = 0.99
    # -> beta = 0.100512 * 0.99 = 0.09950688
    assert ctl.update(torch.tensor(5.4, dtype=torch.float64), 1000) == pytest.approx(0.09950688, rel=1e-9)
    # KL 0: error = clip(-1) = -0.2; factor = 1 - 0.2 * 10000/10000 = 0.8 -> 0.079605504
    assert ctl.update(0.0, 10000) == pytest.approx(0.079605504, rel=1e-9)
    assert ctl.value == pytest.approx(0.079605504, rel=1e-9)
    # On target: error 0, nothing changes.
    assert ctl.update(6.0, 5000) == pytest.approx(0.079605504, rel=1e-9)


def test_adaptive_controller_state_round_trip():
    ctl = AdaptiveKLController(0.2, target=1.0, horizon=100)
    ctl.update(3.0, 10)  # error 0.2, factor 1.02 -> 0.204
    state = ctl.state_dict()
    assert state["value"] == pytest.approx(0.204)
    resumed = AdaptiveKLController(0.2, target=1.0, horizon=100)
    resumed.load_state_dict(state)
    assert resumed.value == ctl.value
    assert resumed.update(3.0, 10) == pytest.approx(0.204 * 1.02)


@pytest.mark.parametrize("kwargs", [dict(init_coef=0.0), dict(target=0.0), dict(horizon=0)])
def test_adaptive_controller_rejects_bad_settings(kwargs):
    with pytest.raises(ValueError):
        AdaptiveKLController(**kwargs)


def test_adaptive_controller_rejects_nan_kl():
    with pytest.raises(ValueError, match="finite"):
        AdaptiveKLController().update(float("nan"), 8)
