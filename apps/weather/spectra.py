"""Zonal energy spectra of forecasts and truth (WeatherBench2's ``ZonalEnergySpectrum``), streaming over inits.

Why: RMSE rewards blur. A diffusion ensemble's members should keep the truth's power at small scales while
the ensemble mean loses it with lead; the spectra show both (method card §15.4).

Definition (per latitude row i with circumference ``C(i) = 2πR cos(lat_i)``, R the mean of the equatorial and
polar radii as in WB2, and L longitudes): ``F[k] = (1/L) Σ_l f[l] e^{-2πi kl/L}``, ``S[0] = C|F[0]|²``,
``S[k] = 2C|F[k]|²`` for ``k = 1 .. L//2``; the zonal frequency of wavenumber k is ``k·360 / (L·Δlon·C(i))``
per metre and the wavelength its inverse. ``Σ_k S[k]`` is then the line integral of ``f²`` around the circle
(Parseval; exactly for odd L: WB2 doubles the Nyquist term of an even L too), so S has units of metres × the
field's units squared.

Band average (as WB2 aggregates over latitude): each row's spectrum is linearly interpolated in frequency
onto one common grid of ``K = L//2 + 1`` frequencies from 0 to the highest frequency every band row resolves,
then the rows with ``lo ≤ |lat| ≤ hi`` are averaged (plain mean). Spectra need a grid that closes around the
globe (uniform longitudes, ``L·Δlon = 360°``): a regional grid is not periodic and is refused.

Per (channel, lead), averaged over inits: the truth's spectrum, the ensemble mean's, and the mean of the
members' spectra. A row with a missing value (a masked field: SST over land) is left out of that init.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# WB2 schema.EARTH_RADIUS_M: the mean of the equatorial (6378 km) and polar (6357 km) radii
EARTH_RADIUS_M = 1000.0 * (6357.0 + 6378.0) / 2.0


def zonal_spacing_deg(lon_deg: np.ndarray) -> float:
    """The longitude step of a grid that closes around the globe; a ValueError otherwise.

    Args:
        lon_deg: (L,) longitudes in degrees (any origin, ascending).
    """
    lon = np.asarray(lon_deg, dtype=np.float64)
    if lon.size < 4:
        raise ValueError(f"zonal spectra need at least 4 longitudes, got {lon.size}")
    steps = np.diff(lon)
    if np.max(np.abs(steps - steps[0])) > 1e-3:
        raise ValueError("zonal spectra need uniformly spaced longitudes")
    span = steps[0] * lon.size
    if abs(span - 360.0) > 1e-3 * lon.size:
        raise ValueError(f"zonal spectra need a grid around the whole globe; these {lon.size} longitudes "
                         f"{steps[0]:g} degrees apart span {span:g} degrees (a regional grid is not periodic)")
    return float(steps[0])


def circumference_m(lat_deg: np.ndarray) -> np.ndarray:
    """(H,) length in metres of each latitude circle."""
    return 2.0 * np.pi * EARTH_RADIUS_M * np.cos(np.radians(np.asarray(lat_deg, dtype=np.float64)))


def zonal_energy_spectrum(fields: np.ndarray, lat_deg: np.ndarray) -> np.ndarray:
    """Energy spectrum along each latitude row (module docstring).

    Args:
        fields: (..., H, L) values; L longitudes closing around the globe.
        lat_deg: (H,) row latitudes.

    Returns:
        (..., H, L//2 + 1) float64, ``S[k]`` per row; its sum over k is ``C(i)·mean(f²)`` along the row (odd L).
    """
    f_k = np.fft.rfft(np.asarray(fields, dtype=np.float64), axis=-1, norm="forward")
    power = f_k.real**2 + f_k.imag**2
    power[..., 1:] *= 2.0  # k > 0 stands for both +k and -k (WB2 doubles every k > 0)
    return power * circumference_m(lat_deg)[:, None]


def zonal_frequencies(lat_deg: np.ndarray, n_lon: int, spacing_deg: float) -> np.ndarray:
    """(H, L//2 + 1) zonal frequency per metre of each row's wavenumbers: ``k / (L · spacing_m)``."""
    spacing_m = circumference_m(lat_deg) * spacing_deg / 360.0
    with np.errstate(divide="ignore"):  # a pole row (circumference 0) has no finite frequency
        return np.fft.rfftfreq(n_lon)[None, :] / spacing_m[:, None]


def band_rows(lat_deg: np.ndarray, band: tuple[float, float]) -> np.ndarray:
    """Indices of the rows with ``lo <= |lat| <= hi`` off the poles; a ValueError when there are none."""
    lo, hi = band
    if not 0.0 <= lo <= hi <= 90.0:
        raise ValueError(f"spectra band {band} must satisfy 0 <= lo <= hi <= 90 (absolute latitude)")
    alat = np.abs(np.asarray(lat_deg, dtype=np.float64))
    rows = np.flatnonzero((alat >= lo) & (alat <= hi) & (alat < 90.0))
    if not rows.size:
        raise ValueError(f"no grid row (off the poles) has |latitude| within {lo:g}..{hi:g} degrees")
    return rows


@dataclass
class SpectrumAccumulator:
    """Init-mean zonal spectra per (channel, lead) of truth, ensemble mean and members, band-averaged at the end.

    Memory: three (H, L//2 + 1) sums per key. Construction checks the grid (a ValueError if it does not close
    around the globe or no row lies in the band).

    Args:
        lat: (H,) latitudes; lon: (L,) longitudes (degrees).
        band: (lo, hi) absolute latitudes averaged over.
    """

    lat: np.ndarray
    lon: np.ndarray
    band: tuple[float, float] = (30.0, 60.0)
    _sums: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.lat = np.asarray(self.lat, dtype=np.float64)
        self.spacing = zonal_spacing_deg(self.lon)
        self.band = (float(self.band[0]), float(self.band[1]))
        self.rows = band_rows(self.lat, self.band)

    def add(self, variable: str, lead: int, ens: np.ndarray, truth: np.ndarray) -> None:
        """One init: ``ens`` (M, H, L) members, ``truth`` (H, L). Only the band's rows are transformed."""
        lat = self.lat[self.rows]
        ens = np.asarray(ens, dtype=np.float64)[:, self.rows]
        truth = np.asarray(truth, dtype=np.float64)[self.rows]
        complete = np.isfinite(truth).all(-1) & np.isfinite(ens).all(axis=(0, -1))  # (R,) rows holding data
        ens, truth = np.where(complete[:, None], ens, 0.0), np.where(complete[:, None], truth, 0.0)
        parts = np.stack([zonal_energy_spectrum(truth, lat), zonal_energy_spectrum(ens.mean(0), lat),
                          zonal_energy_spectrum(ens, lat).mean(0)])  # (3, R, K)
        s = self._sums.setdefault((variable, int(lead)), [np.zeros_like(parts), np.zeros(len(self.rows))])
        s[0] += parts * complete[None, :, None]
        s[1] += complete

    def result(self) -> list[dict]:
        """Per (channel, lead): ``wavelength_km`` and the band-mean ``truth``, ``ensemble_mean``, ``members``
        spectra (m × units², ascending frequency; the first entry, wavelength infinite (null in JSON), is the
        zonal mean's power), ``n_inits`` and ``rows`` (band rows with data). A key whose band rows never held data is left out."""
        lat = self.lat[self.rows]
        freqs = zonal_frequencies(lat, len(self.lon), self.spacing)  # (R, K)
        out = []
        for (variable, lead), (sums, counts) in sorted(self._sums.items()):
            used = counts > 0
            if not used.any():
                continue
            grid = np.linspace(0.0, freqs[used, -1].min(), freqs.shape[1])  # every used row resolves it
            mean = sums[:, used] / counts[used][None, :, None]  # (3, R_used, K)
            band = np.array([[np.interp(grid, f, row) for f, row in zip(freqs[used], part)] for part in mean]).mean(1)
            with np.errstate(divide="ignore"):
                wavelength_km = 1e-3 / grid
            out.append({"variable": variable, "lead_hours": lead, "n_inits": int(counts.max()), "rows": int(used.sum()),
                        "wavelength_km": wavelength_km.tolist(), "truth": band[0].tolist(),
                        "ensemble_mean": band[1].tolist(), "members": band[2].tolist()})
        return out
