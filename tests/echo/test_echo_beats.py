"""Beat-by-beat ED/ES detection and EF on phantom sequences with known per-beat EF; temporal consistency; MP4."""

from __future__ import annotations

import numpy as np
import pytest

from apps.echo.beats import Beat, detect_beats, peak_distance, temporal_consistency
from apps.echo.phantom import Grid, cycle_phase, labels, make_patient
from apps.echo.pipeline import _beat_by_beat_ef


def _sequence(spec, period, depths, grid, extra=5):
    """LV masks of len(depths) beats and their phases; beat b contracts to phase ``depths[b]`` (1 = full
    ES), so each beat has its own exact EF ``100·(V(0) − V(depth))/V(0)``."""
    n = len(depths) * period + extra
    phases = [cycle_phase(k, period) * depths[min(k // period, len(depths) - 1)] for k in range(n)]
    masks = np.stack([labels(spec, "4CH", p, grid) == 1 for p in phases])
    return masks, np.array(phases)


@pytest.mark.parametrize("index", [0, 1])
def test_beat_by_beat_ef_on_phantom(index):
    spec, grid = make_patient(index, seed=0), Grid.for_depth((128, 112))
    depths, period = [1.0, 0.55, 0.8], 24  # three beats with different EF, 50 fps
    masks, phases = _sequence(spec, period, depths, grid)
    area = masks.reshape(len(masks), -1).sum(1)
    beats, method = detect_beats(area, fps=50.0)
    assert method == "find_peaks" and len(beats) == 3
    es_true = int(np.argmax([cycle_phase(k, period) for k in range(period)]))
    assert [b.es for b in beats] == [es_true + period * i for i in range(3)]
    # ED = start of each beat; area is counted in whole pixels, so a near-flat top may pick a neighbour
    assert all(abs(b.ed - period * i) <= 1 for i, b in enumerate(beats))
    v = spec.volume_ml
    truth = [100 * (v(phases[b.ed]) - v(phases[b.es])) / v(phases[b.ed]) for b in beats]  # exact EF of each beat
    native = {"mask": np.stack([masks[f] for b in beats for f in (b.ed, b.es)])}
    native["member_masks"] = np.stack([native["mask"], native["mask"]], axis=1)  # 2 identical "members"
    out = _beat_by_beat_ef(native, grid.spacing, beats)
    got = [b["ef"] for b in out["beats"]]
    assert got == pytest.approx(truth, abs=2.0)  # single-plane disks vs the phantom's exact volumes
    assert truth[1] < truth[2] < truth[0] and got[1] < got[2] < got[0]
    assert out["ef_single_plane"] == pytest.approx(np.mean(got))
    assert out["ef_interval"] == pytest.approx([np.mean(got)] * 2)


def test_distance_scales_with_frame_rate():
    spec, grid = make_patient(2, seed=0), Grid.for_depth((96, 80))
    masks, _ = _sequence(spec, 12, [1.0, 1.0, 1.0, 1.0], grid)  # 12-frame beats = 25 fps at 125 bpm
    area = masks.reshape(len(masks), -1).sum(1)
    assert peak_distance(25.0) == 10 and peak_distance(None) == 20 and peak_distance(50.0) == 20
    assert len(detect_beats(area, fps=25.0)[0]) == 4
    assert len(detect_beats(area, fps=None)[0]) < 4  # EchoNet's 20 frames would merge beats at 25 fps


def test_half_sequence_falls_back_to_global_extremes():
    area = np.linspace(100.0, 60.0, 15)  # ED → ES: the minimum is the last frame, no interior peak
    beats, method = detect_beats(area, fps=50.0)
    assert method == "global extremes" and (beats[0].ed, beats[0].es) == (0, 14)
    with pytest.raises(ValueError, match="1-D curve"):
        detect_beats(np.zeros((2, 2)))


def test_temporal_consistency():
    spec, grid = make_patient(0, seed=0), Grid.for_depth((96, 80))
    masks, _ = _sequence(spec, 24, [1.0, 1.0], grid)
    smooth = temporal_consistency(masks)
    rng = np.random.default_rng(0)
    flicker = masks.copy()
    flicker[1::2] = np.roll(flicker[1::2], 6, axis=2)  # every other frame jumps sideways
    noisy = temporal_consistency(flicker)
    assert smooth["frame_dice_mean"] > 0.95 and noisy["frame_dice_mean"] < smooth["frame_dice_mean"] - 0.05
    jitter = masks.reshape(len(masks), -1).sum(1) + rng.normal(0, 200, len(masks))
    assert temporal_consistency(masks, jitter)["area_roughness"] > smooth["area_roughness"] + 0.5
    same = temporal_consistency(np.repeat(masks[:1], 3, axis=0))
    assert same["frame_dice_mean"] == 1.0


def test_mp4_overlay(tmp_path):
    av = pytest.importorskip("av")
    from apps.echo.report import ffmpeg_available, save_mp4

    if not ffmpeg_available():
        pytest.skip("imageio-ffmpeg not installed (the echo extra installs it)")
    frames = np.random.default_rng(0).integers(0, 255, (17, 45, 61), dtype=np.uint8)  # odd sides
    masks = np.zeros(frames.shape, bool)
    masks[:, 10:30, 20:40] = True
    assert save_mp4(tmp_path / "s.mp4", frames, masks, {3: "ED1", 9: "ES1"}, fps=50.0) == (46, 62)
    with av.open(str(tmp_path / "s.mp4")) as c:
        decoded = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(decoded) == 17 and decoded[0].shape == (46, 62, 3)


def test_flat_area_curve_is_one_frame_not_a_beat():
    assert detect_beats(np.full(6, 40.0), fps=50.0) == ([Beat(0, 0)], "flat area curve")
    assert detect_beats(np.array([3.0, 5.0, 4.0]))[1] == "global extremes"
