"""EDM objective for a block of k future frames, with log-normal σ and an area-weighted loss.

The diffused quantity is the normalised *tendency* of each frame, ``(y_j − x0)/s_j`` with ``s_j`` the
per-(frame, channel) standard deviation of the tendency in the training data (``delta_scale``, given by
the data module and stored with the checkpoint), so it has unit variance and ``σ_data = 1``.
Loss: ``λ(σ)·‖D − y‖²`` with the EDM weight, times WB2 cell-area latitude weights, averaged over the cells
that hold data (a batch ``"valid"`` mask leaves out the land cells of SST).

``train_crop = (h, w)`` trains on one random ``h × w`` window of every batch (a new offset per step, any
cell offset, so patch boundaries move too): an augmentation for small regional records, where the net
otherwise learns the whole box's few weeks by heart. Validation and sampling always see the full grid.
A net trained only on crops spreads too little on the full grid (more tokens than it learnt on), so
``train_crop_prob`` < 1 crops only that share of the steps and trains on the full grid on the rest.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from apps.weather.metrics import cell_area_weights
from dualsci.diffusion import (
    SAMPLERS,
    Churn,
    EDMPath,
    EDMPrecond,
    GaussianDenoiser,
    GaussianObjective,
    LogNormalSigmaTime,
    karras_sigmas,
)


# batch entries with the grid as their last two axes (lat, lon are (B, H) and (B, W) and cropped apart)
SPATIAL_KEYS = ("x0", "y", "statics", "x_hist", "prior", "valid", "x0_valid")


def crop_batch(batch: dict, size: tuple[int, int], generator: torch.Generator | None = None) -> dict:
    """One random ``size = (h, w)`` window of the whole batch (every item the same cells).

    Args:
        batch: the collated batch; its ``SPATIAL_KEYS`` end in (H, W), ``lat`` is (B, H), ``lon`` (B, W).
        size: crop height and width in cells, at most (H, W).
        generator: torch generator of the offsets (None = the global one, seeded by ``seed_everything``).

    Returns:
        a shallow copy of the batch with those entries cut to (h, w).
    """
    big_h, big_w = batch["x0"].shape[-2:]
    h, w = size
    if h > big_h or w > big_w:
        raise ValueError(f"train_crop {h}x{w} is larger than the {big_h}x{big_w} grid")
    i = int(torch.randint(big_h - h + 1, (1,), generator=generator))
    j = int(torch.randint(big_w - w + 1, (1,), generator=generator))
    return batch_window(batch, i, j, size)


def batch_window(batch: dict, i: int, j: int, size: tuple[int, int]) -> dict:
    """The ``size = (h, w)`` window of the batch whose first cell is (row i, column j): a shallow copy with the
    ``SPATIAL_KEYS`` and ``lat``/``lon`` cut to it."""
    h, w = size
    out = dict(batch)
    for key in SPATIAL_KEYS:
        if key in out:
            out[key] = out[key][..., i:i + h, j:j + w]
    out["lat"], out["lon"] = batch["lat"][:, i:i + h], batch["lon"][:, j:j + w]
    return out


def area_weights(lat: Tensor) -> Tensor:
    """(H,) WB2 cell-area weights (mean 1) as a float32 tensor."""
    return torch.from_numpy(cell_area_weights(lat.detach().cpu().numpy())).float()


class WeatherEDMObjective:
    """EDM (VE σ) maths for the forecaster.

    Args:
        sigma_data: data std of the diffused tendencies (1 after ``delta_scale``).
        p_mean, p_std: training density ``ln σ ~ N(p_mean, p_std²)``.
        sigma_min, sigma_max, rho: the Karras sampling grid.
        area_weighted: multiply the loss by cell-area latitude weights.
        train_crop: (h, w) random window the training loss sees (cells; multiples of the net's patch), or
            None for the full grid. Used only while the net is in training mode.
        train_crop_prob: share of the training steps that are cropped (the rest see the full grid).
    """

    def __init__(
        self,
        sigma_data: float = 1.0,
        p_mean: float = -1.2,
        p_std: float = 1.2,
        sigma_min: float = 0.002,
        sigma_max: float = 80.0,
        rho: float = 7.0,
        area_weighted: bool = True,
        train_crop: Sequence[int] | None = None,
        train_crop_prob: float = 1.0,
    ) -> None:
        if train_crop is not None:
            train_crop = tuple(int(v) for v in train_crop)
            if len(train_crop) != 2 or min(train_crop) < 1:
                raise ValueError(f"WeatherEDMObjective: train_crop={train_crop} must be two positive cell counts (h, w)")
        if not 0.0 <= train_crop_prob <= 1.0:
            raise ValueError(f"WeatherEDMObjective: train_crop_prob={train_crop_prob} must be in [0, 1]")
        self.train_crop, self.train_crop_prob = train_crop, float(train_crop_prob)
        self.init_kwargs = dict(
            sigma_data=sigma_data, p_mean=p_mean, p_std=p_std, sigma_min=sigma_min, sigma_max=sigma_max, rho=rho,
            area_weighted=area_weighted, train_crop=None if train_crop is None else list(train_crop),
            train_crop_prob=float(train_crop_prob),
        )
        self.path = EDMPath(sigma_min, sigma_max, rho)
        self.gauss = GaussianObjective(
            self.path, EDMPrecond(sigma_data), LogNormalSigmaTime(self.path, p_mean, p_std), loss_weight="edm"
        )
        self.sigma_min, self.sigma_max, self.rho = sigma_min, sigma_max, rho
        self.area_weighted = area_weighted

    @staticmethod
    def tendency(batch: dict) -> Tensor:
        """(B, k, C, H, W) normalised tendencies of the batch's future frames.

        With a ``"prior"`` (B, k, C, H, W) in the batch (``prior="diurnal"``), the departure from it.
        """
        scale = batch["delta_scale"][:, :, :, None, None]
        d = batch["y"] - batch["x0"][:, None]
        if "prior" in batch:
            d = d - batch["prior"]
        return d / scale

    def loss(self, net: nn.Module, batch: dict) -> dict[str, Tensor]:
        if self.train_crop is not None and net.training:
            # one draw per step from the global generator (seeded by seed_everything); prob 1 draws nothing,
            # so crop-only training is unchanged by this option
            if self.train_crop_prob >= 1.0 or float(torch.rand(())) < self.train_crop_prob:
                batch = crop_batch(batch, self.train_crop)
        x0 = self.tendency(batch)
        b = x0.shape[0]
        t = self.gauss.sample_time(b, device=x0.device)
        x_t, noise = self.gauss.corrupt(x0, t)
        x_in, c_noise = self.gauss.net_input(x_t, t)
        lat, lon = batch["lat"][0], batch["lon"][0]
        F = net(x_in, c_noise, batch["x0"], batch["statics"], batch["init_time"], lat, lon, x_hist=batch.get("x_hist"))
        weight = None
        if self.area_weighted:
            weight = area_weights(lat).to(x0.device)[None, None, None, :, None].expand_as(x0)
        # "valid" (B, k, C, H, W): cells a masked field (SST over land) leaves empty weigh 0 and are not counted
        per_sample = self.gauss.loss(F, x0, x_t, noise, t, mask=batch.get("valid"), spatial_weight=weight)
        return {"loss": per_sample.mean()}

    @torch.no_grad()
    def sample(self, net: nn.Module, batch: dict, sampler: str = "heun", steps: int = 10) -> Tensor:
        """``predict``: one block per window of the batch from fresh noise -> (B, k, C, H, W) normalised.

        (Ensembles, seeds and streaming output are the ``forecast`` verb's job.)
        """
        x0 = batch["x0"]
        k = batch["delta_scale"].shape[1]
        noise = torch.randn((x0.shape[0], k, *x0.shape[1:]), device=x0.device, dtype=x0.dtype)
        return self.sample_block(
            net, x0, batch["statics"], batch["init_time"], batch["lat"][0], batch["lon"][0],
            batch["delta_scale"][0], noise, sampler, steps, prior=batch.get("prior"), x_hist=batch.get("x_hist"),
        )

    def sigmas(self, steps: int, sigma_max: float | None = None, rho: float | None = None) -> Tensor:
        """Karras grid of ``steps`` levels; ``sigma_max``/``rho`` override the objective's (sampling only)."""
        smax = self.sigma_max if sigma_max is None else float(sigma_max)
        r = self.rho if rho is None else float(rho)
        if not (smax > self.sigma_min and r > 0):
            raise ValueError(f"sigma grid: sigma_max={smax} must exceed sigma_min={self.sigma_min} and rho={r} must be > 0")
        return karras_sigmas(steps, self.sigma_min, smax, r)

    @torch.no_grad()
    def sample_block(
        self,
        net: nn.Module,
        x0: Tensor,
        statics: Tensor,
        init_time: Tensor,
        lat: Tensor,
        lon: Tensor,
        delta_scale: Tensor,
        noise: Tensor,
        sampler: str = "heun",
        steps: int = 10,
        churn: float | Churn = 0.0,
        generators=None,
        prior: Tensor | None = None,
        x_hist: Tensor | None = None,
        sigma_max: float | None = None,
        rho: float | None = None,
    ) -> Tensor:
        """Sample one block of k frames for a batch of members.

        Args:
            x0: (B, C, H, W) normalised state at the block's init.
            statics: (B, S, H, W); init_time: (B,) int64 ns; lat (H,), lon (W,) degrees.
            delta_scale: (k, C) tendency scales.
            noise: (B, k, C, H, W) standard normal start noise (per member, per block).
            sampler: ``"heun"`` (EDM Alg. 2, 2N − 1 calls) or ``"dpmpp_2m"`` (N calls), or any core sampler.
            steps: N levels of the Karras grid.
            churn: EDM S_churn, or a core ``Churn`` with S_tmin, S_tmax and S_noise (needs ``generators`` for
                reproducible draws).
            prior: (B, k, C, H, W) climatological tendency added back (``prior="diurnal"``), or None.
            x_hist: (B, h, C, H, W) normalised states before the init for a net with ``history = h``.
            sigma_max, rho: the sampling grid's top level and Karras ρ (None = the objective's).

        Returns:
            (B, k, C, H, W) normalised states of frames 1..k.
        """
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler={sampler!r} is not one of {tuple(SAMPLERS)}")
        sig = self.sigmas(steps, sigma_max, rho)

        def net_fn(x_in: Tensor, c_noise: Tensor) -> Tensor:
            return net(x_in, c_noise, x0, statics, init_time, lat, lon, x_hist=x_hist)

        denoiser = GaussianDenoiser(net_fn, self.gauss)
        x = noise * float(sig[0])
        delta = SAMPLERS[sampler](denoiser, x, sig, generator=generators, churn=churn)
        out = x0[:, None] + delta * delta_scale[None, :, :, None, None].to(delta)
        return out if prior is None else out + prior.to(out)
