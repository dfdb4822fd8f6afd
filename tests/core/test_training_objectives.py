"""JointGaussianObjective with the real DualStreamTransformer, the toy problem and the ``dualsci`` CLI."""

from __future__ import annotations

import contextlib
import io

import pytest
import torch
import yaml

from dualsci.diffusion import GaussianObjective, JointSchedule, LogitNormalTime, RectifiedFlowPath, VelocityParam
from dualsci.nn import DualStreamConfig, DualStreamTransformer
from dualsci.training.cli import main
from dualsci.training.objectives import JointGaussianObjective
from dualsci.training.toy import coupling_error, make_toy_pairs


def _stream() -> GaussianObjective:
    return GaussianObjective(RectifiedFlowPath(), VelocityParam(), LogitNormalTime(), loss_weight="native")


def _net() -> DualStreamTransformer:
    return DualStreamTransformer(
        DualStreamConfig(in_dim_a=2, in_dim_b=1, dim=16, num_heads=2, depth_dual=1, rope_axes_dim=(8,))
    )


def _batch(n: int = 3) -> dict[str, torch.Tensor]:
    data = make_toy_pairs(n, L_a=4, L_b=6)
    return {k: data[k] for k in ("a", "b", "pos_a", "pos_b")}


def test_toy_pairs_are_perfectly_coupled():
    data = make_toy_pairs(64, L_a=8, L_b=16)
    assert data["a"].shape == (64, 8, 2) and data["b"].shape == (64, 16, 1)
    err = coupling_error(data["a"], data["b"])
    assert err["radius_gap"] < 1e-5 and err["ring_spread"] < 1e-5
    assert err["radius_gap_shuffled"] > 0.1


def test_loss_has_both_streams_and_gradients_reach_the_net():
    net = _net()
    losses = JointGaussianObjective(_stream(), _stream()).loss(net, _batch())
    assert set(losses) == {"loss", "loss_a", "loss_b"}
    torch.testing.assert_close(losses["loss"], losses["loss_a"] + losses["loss_b"])
    losses["loss"].backward()
    assert net.head_a.linear.weight.grad.abs().sum() > 0


def test_untrained_rf_sampler_returns_its_start_noise_and_counts_nfe():
    # Zero-initialised heads predict velocity 0, so Euler keeps x = ε all the way: the output is the
    # start noise itself, which the same generator reproduces.
    objective = JointGaussianObjective(_stream(), _stream(), sample_steps=5)
    batch = _batch()
    out = objective.sample(_net(), batch, generator=torch.Generator().manual_seed(0), return_nfe=True)
    g = torch.Generator().manual_seed(0)
    expected_a = torch.randn(batch["a"].shape, generator=g)
    assert out["nfe"] == 5
    torch.testing.assert_close(out["a"], expected_a)
    assert out["b"].shape == batch["b"].shape


def test_conditional_b_keeps_the_given_stream():
    objective = JointGaussianObjective(_stream(), _stream())
    batch = _batch()
    out = objective.sample(_net(), batch, JointSchedule.conditional_b(4))
    torch.testing.assert_close(out["b"], batch["b"])


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="weight_b must be >= 0"):
        JointGaussianObjective(_stream(), _stream(), weight_b=-1.0)


def test_dualsci_command_prints_its_toy_config(monkeypatch):
    monkeypatch.setattr("sys.argv", ["dualsci"])
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        main(["fit", "--trainer.max_steps", "7", "--print_config"])
    config = yaml.safe_load(out.getvalue())
    assert config["model"]["class_path"] == "dualsci.training.DiffusionModule"
    assert config["model"]["init_args"]["net"]["class_path"] == "dualsci.nn.DualStreamTransformer"
    assert config["trainer"]["max_steps"] == 7


class _Spy(torch.nn.Module):
    """Records the times and condition the network sees; predicts zeros through one parameter."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x_a, x_b, t_a, t_b, cond=None, **_):
        self.seen = (t_a.clone(), t_b.clone(), None if cond is None else cond.clone())
        return self.w * x_a, self.w * x_b


def test_stream_drop_puts_one_stream_at_pure_noise_and_out_of_the_loss():
    from dualsci.diffusion import EpsParam, UniformTime

    torch.manual_seed(0)
    # eps-parameterised rectified flow divides by α_t = 0 at t = 1 (its loss there is inf):
    # the dropped rows must not poison the loss or its gradient.
    stream = GaussianObjective(RectifiedFlowPath(), EpsParam(), UniformTime(), loss_weight="unit")
    objective = JointGaussianObjective(stream, stream, stream_drop_prob=1.0)
    spy = _Spy()
    batch = {"a": torch.randn(64, 4, 2), "b": torch.randn(64, 6, 1)}
    out = objective.loss(spy, batch)
    t_a, t_b, _ = spy.seen
    dropped_a, dropped_b = t_a == 1, t_b == 1
    assert torch.all(dropped_a ^ dropped_b)  # exactly one stream dropped per sample
    assert 10 < int(dropped_a.sum()) < 54  # a and b chosen evenly
    assert torch.isfinite(out["loss"])
    out["loss"].backward()
    assert torch.isfinite(spy.w.grad)


def test_cond_drop_replaces_the_condition_by_the_null():
    torch.manual_seed(0)
    spy = _Spy()
    batch = {"a": torch.randn(8, 4, 2), "b": torch.randn(8, 6, 1), "cond": torch.ones(8, 3)}
    JointGaussianObjective(_stream(), _stream(), cond_drop_prob=1.0).loss(spy, batch)
    assert torch.equal(spy.seen[2], torch.zeros(8, 3))
    JointGaussianObjective(_stream(), _stream()).loss(spy, batch)
    assert torch.equal(spy.seen[2], torch.ones(8, 3))
    with pytest.raises(ValueError, match="stream_drop_prob"):
        JointGaussianObjective(_stream(), _stream(), stream_drop_prob=1.5)
