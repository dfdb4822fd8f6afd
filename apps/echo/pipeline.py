"""From files to clinical outputs: load a checkpoint, read any image/sequence/video, segment, write results.

Inputs (``read_input``): CAMUS ``.mhd``/``.nii[.gz]`` images or sequences (spacing from the header),
videos ``.avi``/``.mp4`` (no spacing: pixels, flagged), and ``.png``/``.jpg`` images. A sequence is
first screened with the one-shot calibration head (cheap): its per-frame LV area gives the beats (ES at
EchoNet's ``find_peaks`` minima, ED the largest area before each; ``apps/echo/beats.py``) and a
temporal-consistency score; the diffusion ensemble then segments every beat's ED and ES frames and EF is
computed per beat (mean over beats for the sequence). Volumes and EF come per ensemble
member (single-plane method of disks per view; biplane Simpson when the 2CH and 4CH ED/ES images of one
CAMUS patient are all given), so EF gets an interval from the ensemble (min–max over members).
"""

from __future__ import annotations

import importlib
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml

from apps.echo import metrics
from apps.echo.camus import CamusError, check_labels, read_image
from apps.echo.echonet import EchoNetError, read_video
from apps.echo.sampling import segment_batch
from apps.echo.transforms import model_spacing, to_model, to_native
from dualsci.io import output_dir_problem

CAMUS_NAME = re.compile(r"(patient\d+)_(2CH|4CH)_(ED|ES)$")
CAMUS_VIEW = re.compile(r"(patient\d+)_(2CH|4CH)")  # also half sequences / 2019 sequences


# the only classes a checkpoint may build (the config is data: it must not import arbitrary code)
ECHO_CLASSES = {"net": "apps.echo.model.EchoDNDNet", "objective": "apps.echo.objective.EchoDNDObjective"}


class InputError(ValueError):
    """An input file that cannot be segmented; the message names it."""


def check_out(out: str | os.PathLike, overwrite: bool = False, option: str = "--out") -> None:
    """Raise :class:`InputError` before any work when ``out`` cannot take a new output folder: it is a
    file, a file sits above it (``mkdir`` raised a raw ``NotADirectoryError`` after the segmentation,
    ``Path.exists`` being False for ``a_file/sub``), it is not writable, or it exists (without
    ``overwrite``; with it, only an earlier ``segment`` output, holding ``cases.json``, is replaced:
    ``--out . --overwrite`` would have deleted the working folder)."""
    out = Path(out)
    if out.is_dir():
        if not overwrite:
            raise InputError(f"{out}: output folder already exists (use --overwrite)")
        if any(out.iterdir()) and not (out / "cases.json").exists():
            raise InputError(f"{out}: --overwrite replaces only an earlier segment output (with cases.json); "
                             "this folder holds other data")
        return
    problem = output_dir_problem(out, option)
    if problem:
        raise InputError(problem)


# ------------------------------------------------------------------------------------------ model


def _instantiate(spec):
    """Build ``{class_path, init_args}`` trees (as saved by LightningCLI) without pickles."""
    if isinstance(spec, dict) and "class_path" in spec:
        module, _, name = spec["class_path"].rpartition(".")
        cls = getattr(importlib.import_module(module), name)
        return cls(**{k: _instantiate(v) for k, v in (spec.get("init_args") or {}).items()})
    if isinstance(spec, list):
        return [_instantiate(v) for v in spec]
    return spec


def load_model(ckpt: str | os.PathLike):
    """``(net, objective, config)`` from a checkpoint written by ``dualsci-echo fit``
    (``torch.load(weights_only=True)``; the model config is the YAML embedded by ``build_cli``)."""
    ckpt = Path(ckpt)
    if not ckpt.exists():
        raise InputError(f"{ckpt}: checkpoint not found")
    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, pickle errors, not a torch file: several exception types
        raise InputError(f"{ckpt}: cannot read checkpoint ({err})") from err
    text = state.get("dualsci_config") if isinstance(state, dict) else None
    if text is None:
        raise InputError(f"{ckpt}: no embedded dualsci config (was it written by `dualsci-echo fit`?)")
    config = yaml.safe_load(text)
    model = _echo_model_spec(ckpt, config)
    net, objective = _instantiate(model["net"]), _instantiate(model["objective"])
    weights = {k[4:]: v for k, v in state.get("state_dict", {}).items() if k.startswith("net.")}
    try:
        net.load_state_dict(weights)
    except RuntimeError as err:
        raise InputError(f"{ckpt}: weights do not fit the model described in the checkpoint ({err})") from err
    net.eval()
    return net, objective, config


def _echo_model_spec(ckpt: Path, config) -> dict:
    """The model's ``init_args`` after checking they build the echo net and objective: another app's
    checkpoint (e.g. medseg's) loads fine but fails later deep inside segmentation without naming the file."""
    try:
        model = config["model"]["init_args"]
        found = {key: model[key]["class_path"] for key in ECHO_CLASSES}
    except (TypeError, KeyError) as err:
        raise InputError(f"{ckpt}: embedded config has no model.init_args.net/objective ({err!r})") from err
    for key, expected in ECHO_CLASSES.items():
        if found[key] != expected:
            raise InputError(f"{ckpt}: model.{key} is {found[key]!r}, expected {expected!r} "
                             "(not a `dualsci-echo fit` checkpoint)")
    return model


# ------------------------------------------------------------------------------------------ inputs


@dataclass
class EchoInput:
    path: Path
    name: str
    frames: np.ndarray  # (N, H, W) uint8
    spacing: tuple[float, float]  # (dy, dx) mm, or (1, 1) px
    has_spacing: bool
    gt: np.ndarray | None = None  # (N, H, W) CAMUS labels when a _gt file sits next to the input
    camus: tuple[str, str, str] | None = None  # (patient, view, phase)
    fps: float | None = None
    extra: dict = field(default_factory=dict)


def _stem(path: Path) -> str:
    name = path.name
    for ext in (".nii.gz", ".nii", ".mhd", ".avi", ".mp4", ".png", ".jpg", ".jpeg"):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return path.stem


def read_input(path: str | os.PathLike) -> EchoInput:
    """Read one file into frames ``(N, H, W)`` uint8 (raises :class:`InputError` naming the file)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    low, stem = path.name.lower(), _stem(path)
    gt, fps = None, None
    try:
        if low.endswith((".mhd", ".nii", ".nii.gz")):
            arr, spacing = read_image(path)
            has_spacing = True
            ext = path.name[len(stem):]
            gt_path = path.with_name(f"{stem}_gt{ext}")
            if gt_path.exists() and not stem.endswith("_gt"):
                gt_arr, _ = read_image(gt_path)
                if gt_arr.shape != arr.shape:
                    raise InputError(f"{gt_path}: label shape {gt_arr.shape} differs from image shape {arr.shape}")
                gt = check_labels(gt_arr, gt_path)
        elif low.endswith((".avi", ".mp4")):
            arr, spacing, has_spacing = read_video(path), (1.0, 1.0), False
            fps = _video_fps(path)
        elif low.endswith((".png", ".jpg", ".jpeg")):
            from PIL import Image

            try:
                arr = _read_picture(Image.open(path))
            except Exception as err:
                raise InputError(f"{path}: unreadable image ({err})") from err
            spacing, has_spacing = (1.0, 1.0), False
        else:
            raise InputError(f"{path}: unsupported file type (use .mhd, .nii.gz, .avi, .mp4, .png, .jpg)")
    except (CamusError, EchoNetError) as err:
        raise InputError(str(err)) from err
    if arr.ndim == 2:
        arr = arr[None]
        gt = None if gt is None else gt[None]
    if arr.ndim != 3 or min(arr.shape[1:]) < 8:
        raise InputError(f"{path}: expected an image or a sequence of images, got shape {arr.shape}")
    if not np.isfinite(arr).all():  # NaN/inf made the min-max scaling below return a black or NaN->0 image
        bad = int(arr.size - np.isfinite(arr).sum())
        raise InputError(f"{path}: {bad} of {arr.size} pixel values are NaN or infinite")
    if arr.dtype != np.uint8:
        lo, hi = float(arr.min()), float(arr.max())
        arr = np.round((arr - lo) / (hi - lo + 1e-12) * 255).astype(np.uint8)
    m = CAMUS_NAME.search(stem)
    item = EchoInput(path, stem, arr, spacing, has_spacing, gt, m.groups() if m else None, fps=fps)
    _add_camus_info(item)
    return item


def check_unique_names(items: list[EchoInput]) -> None:
    """Refuse inputs whose case names (file names without extension) repeat, e.g. ``a/x.png`` and
    ``b/x.png``: each case's output folder, its ``cases.csv`` rows and the CAMUS patient grouping are keyed
    by that name, so one would overwrite the other. Renaming silently (``a_x``) would give case ids
    that match no file the user knows; they rename the files or segment the folders in separate runs."""
    seen: dict[str, Path] = {}
    for item in items:
        first = seen.setdefault(item.name, item.path)
        if first is not item.path:
            same = Path(first).resolve() == Path(item.path).resolve()
            problem = "is given twice" if same else f"has the same case name {item.name!r} as {first}"
            raise InputError(f"{item.path}: {problem}; outputs are named after the file, so case names must be "
                             "unique (rename one, or segment them in separate runs)")


def _read_picture(image) -> np.ndarray:
    """Greyscale pixels of a PIL image. 16-bit / 32-bit integer and float greyscale stay in their own
    dtype (``convert("L")`` would clip them to 0/255); the caller min–max scales non-uint8 arrays to
    0–255 as for NIfTI/MHD. Colour and palette images go through ``convert("L")`` (luma)."""
    if image.mode.startswith("I") or image.mode == "F":  # "I;16", "I;16B", "I", "F"
        return np.asarray(image).astype(np.float32)
    return np.asarray(image.convert("L"))


def _video_fps(path: Path) -> float | None:
    """Frame rate from the container (None if it does not say); sets the beat detector's distance."""
    import av

    try:
        with av.open(str(path)) as container:
            rate = container.streams.video[0].average_rate
        return float(rate) if rate else None
    except Exception:  # the frames decoded already; a missing rate only falls back to 20 frames
        return None


def _add_camus_info(item: EchoInput) -> None:
    """Patient, view, ImageQuality, FrameRate and reference volumes from ``Info_<view>.cfg`` next to a
    CAMUS-named file (into ``item.extra``); a malformed cfg is an input error (read before any output)."""
    v = CAMUS_VIEW.search(item.name)
    if not v:
        return
    item.extra.update(patient=v.group(1), view=v.group(2))
    cfg = item.path.parent / f"Info_{v.group(2)}.cfg"
    if not cfg.exists():
        return
    from apps.echo.camus import read_info

    try:
        info = read_info(cfg)
    except CamusError as err:
        raise InputError(str(err)) from err
    item.extra["image_quality"] = info.get("ImageQuality")
    for key in ("EF", "LVedv", "LVesv"):
        if isinstance(info.get(key), (int, float)):
            item.extra[key] = float(info[key])
    if isinstance(info.get("FrameRate"), (int, float)) and info["FrameRate"] > 0:
        item.fps = float(info["FrameRate"])


# ------------------------------------------------------------------------------------------ segmentation


@torch.no_grad()
def screen_sequence(net, frames: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One-shot calibration-head masks ``(N, S, S)`` bool and LV areas (model-grid pixels) per frame."""
    x = torch.stack([to_model(f, size) for f in frames])
    masks = []
    for chunk in x.split(16):
        _, cal = net.encode(chunk)
        masks.append((torch.sigmoid(cal.float()) >= 0.5)[:, 0].numpy())
    masks = np.concatenate(masks)
    return masks, masks.reshape(len(masks), -1).sum(1).astype(float)


def segment_input(net, objective, item: EchoInput, size: int, steps: int = 20, members: int = 5,
                  fusion: str = "mean", seed: int = 0, weights=(1.0, 1.0, 1.0)) -> dict:
    """Segment one input: all of it if it is a single image, else its ED and ES frames.

    Returns a dict with native-grid arrays (``mask, fused, variance, entropy, member_masks``, each with a
    leading frame axis) and the per-case record (metrics, areas, volumes, EF).
    """
    n = len(item.frames)
    record: dict = {"name": item.name, "file": str(item.path), "patient": item.extra.get("patient", item.name),
                    "view": item.extra.get("view"), "image_quality": item.extra.get("image_quality"),
                    "frames": n, "spacing_mm": list(item.spacing),
                    "has_spacing": item.has_spacing, "steps": steps, "members": members, "fusion": fusion,
              "weights": list(weights)}
    if n == 1:
        chosen, roles = [0], ["image"]
        if item.camus:
            roles = [item.camus[2]]
    else:
        from apps.echo.beats import detect_beats, peak_distance, temporal_consistency

        screen, areas = screen_sequence(net, item.frames, size)
        beats, method = detect_beats(areas, item.fps)
        chosen, roles = [f for b in beats for f in (b.ed, b.es)], ["ED", "ES"] * len(beats)
        record["screen_areas"] = areas.tolist()
        record["ed_frame"], record["es_frame"] = beats[0].ed, beats[0].es
        record["beat_detection"] = {"method": method, "fps": item.fps, "distance_frames": peak_distance(item.fps),
                                    "prominence": "0.5·(p95 − p5) of the screened area"}
        record["temporal_consistency"] = {"source": "calibration-head screen of every frame",
                                          **temporal_consistency(screen, areas)}
    images = torch.stack([to_model(item.frames[k], size) for k in chosen])
    out = segment_batch(net, images, steps=steps, members=members, fusion=fusion, seed=seed, objective=objective,
                        weights=weights)
    shape = item.frames.shape[1:]
    native = {k: to_native(out[k], shape) for k in ("fused", "variance", "entropy", "mutual_info", "cal")}
    native["mask"] = np.stack([_post(f) for f in native["fused"]])
    native["member_masks"] = to_native(out["member"], shape) >= 0.5
    if n > 1:
        native["screen"] = to_native(screen.astype(np.float32), shape) >= 0.5
    native["p_gauss"], native["p_bern"] = to_native(out["p_gauss"].mean(1), shape), to_native(out["p_bern"].mean(1), shape)
    record["roles"] = roles
    record["frame_indices"] = chosen
    per = []
    for j, (k, role) in enumerate(zip(chosen, roles)):
        row = {"role": role, "frame": k, "area_mm2" if item.has_spacing else "area_px": float(native["mask"][j].sum() * item.spacing[0] * item.spacing[1]),
               "mean_entropy": float(native["entropy"][j].mean()),
               "boundary_entropy": _boundary_entropy(native["mask"][j], native["entropy"][j])}
        if item.gt is not None:
            ref = item.gt[k] == 1
            row.update(metrics.segmentation_metrics(native["mask"][j], ref, item.spacing))
            # counts for the pooled (EchoNet) Dice 2ΣI/Σ(|P|+|G|) over a dataset, native pixels
            row.update(inter_px=int((native["mask"][j] & ref).sum()), pred_px=int(native["mask"][j].sum()),
                       gt_px=int(ref.sum()))
        per.append(row)
    record["per_frame"] = per
    if n > 1:
        record.update(_beat_by_beat_ef(native, item.spacing, beats))
        for j, row in enumerate(per):
            row["beat"] = j // 2
    return {"native": native, "record": record}


def _beat_by_beat_ef(native: dict, spacing, beats) -> dict:
    """One single-plane EF per beat (frames 2i, 2i+1 of the segmented stack are beat i's ED, ES), with
    the member interval; the sequence EF is the mean over beats (as EchoNet averages beats), its interval
    the min–max over members of each member's beat-mean EF."""
    rows, member_efs = [], []
    for i, beat in enumerate(beats):
        ef = _single_plane_ef(native["member_masks"][2 * i], native["member_masks"][2 * i + 1], spacing,
                              native["mask"][2 * i], native["mask"][2 * i + 1])
        if beat.ed == beat.es:  # flat area curve: one frame is not an ED/ES pair (EF was reported as 0 %)
            ef = {k: ([math.nan] * len(v) if isinstance(v, list) else math.nan) for k, v in ef.items()}
        rows.append({"beat": i, "ed_frame": beat.ed, "es_frame": beat.es, "ef": ef["ef_single_plane"],
                     "edv": ef["edv_single_plane"], "esv": ef["esv_single_plane"], "ef_interval": ef["ef_interval"],
                     "ef_members": ef["ef_members_all"]})
        member_efs.append(ef["ef_members_all"])
    efs = np.array([r["ef"] for r in rows], float)
    # each member's beat-mean EF; members without any finite beat EF are left out (no empty-slice warning)
    per_member = np.array([np.nanmean(c) for c in np.array(member_efs, float).reshape(len(member_efs), -1).T
                           if np.isfinite(c).any()] if member_efs else [])
    return {"beats": rows, "ef_single_plane": float(np.nanmean(efs)) if np.isfinite(efs).any() else math.nan,
            "edv_single_plane": rows[0]["edv"], "esv_single_plane": rows[0]["esv"],
            "ef_members": per_member.tolist(),
            "ef_interval": [float(per_member.min()), float(per_member.max())] if len(per_member) else [math.nan, math.nan]}


def _post(fused: np.ndarray) -> np.ndarray:
    from apps.echo.sampling import postprocess

    return postprocess(fused >= 0.5, radius=max(1, round(max(fused.shape) / 128)))


def _boundary_entropy(mask: np.ndarray, ent: np.ndarray, width: int = 3) -> float:
    """Mean predictive entropy in a band of ``width`` px around the predicted boundary (QC score)."""
    from scipy import ndimage

    if not mask.any():
        return float("nan")
    band = ndimage.binary_dilation(mask, iterations=width) & ~ndimage.binary_erosion(mask, iterations=width)
    return float(ent[band].mean())


def _volume_or_nan(mask, spacing) -> float:
    try:
        return metrics.single_plane_volume(mask, spacing)
    except ValueError:
        return math.nan


def _single_plane_ef(ed_members, es_members, spacing, ed_mask, es_mask) -> dict:
    """EF by single-plane disks for the fused masks and each member (interval = min–max over members)."""
    edv, esv = _volume_or_nan(ed_mask, spacing), _volume_or_nan(es_mask, spacing)
    all_efs = [metrics.ejection_fraction(_volume_or_nan(a, spacing), _volume_or_nan(b, spacing)) for a, b in zip(ed_members, es_members)]
    efs = [e for e in all_efs if np.isfinite(e)]
    return {"ef_single_plane": metrics.ejection_fraction(edv, esv), "edv_single_plane": edv, "esv_single_plane": esv,
            "ef_members": efs, "ef_members_all": all_efs, "ef_interval": [min(efs), max(efs)] if efs else [math.nan, math.nan]}


def biplane_from_cases(results: list[dict]) -> list[dict]:
    """Group CAMUS-named single images by patient; biplane Simpson EF (fused + per member) where all four exist."""
    by: dict[str, dict] = {}
    for r in results:
        key = r["item"].camus
        if key and len(r["item"].frames) == 1:
            by.setdefault(key[0], {})[(key[1], key[2])] = r
    rows = []
    for patient, views in sorted(by.items()):
        need = [("2CH", "ED"), ("2CH", "ES"), ("4CH", "ED"), ("4CH", "ES")]
        if not all(k in views for k in need):
            continue
        # each image's own spacing: ED and ES files of one view may differ in size (ES used ED's spacing)
        sp = {k: views[k]["item"].spacing for k in need}
        sp2, sp4 = sp["2CH", "ED"], sp["4CH", "ED"]
        es_spacing = {"spacing2_es": sp["2CH", "ES"], "spacing4_es": sp["4CH", "ES"]}
        m = {k: views[k]["native"]["mask"][0] for k in need}
        row = {"patient": patient}
        try:
            row.update(metrics.biplane_simpson(m["2CH", "ED"], m["2CH", "ES"], m["4CH", "ED"], m["4CH", "ES"], sp2, sp4, **es_spacing))
        except ValueError as err:
            row["error"] = str(err)
        efs = []
        k_members = views["2CH", "ED"]["native"]["member_masks"].shape[1]
        for k in range(k_members):
            mk = {key: views[key]["native"]["member_masks"][0, k] for key in need}
            try:
                efs.append(metrics.biplane_simpson(mk["2CH", "ED"], mk["2CH", "ES"], mk["4CH", "ED"], mk["4CH", "ES"], sp2, sp4, **es_spacing)["ef"])
            except ValueError:
                pass
        row["ef_members"] = efs
        row["ef_interval"] = [min(efs), max(efs)] if efs else [math.nan, math.nan]
        gts = [views[k]["item"].gt for k in need]
        if all(g is not None for g in gts):
            g = {k: views[k]["item"].gt[0] == 1 for k in need}
            try:
                ref = metrics.biplane_simpson(g["2CH", "ED"], g["2CH", "ES"], g["4CH", "ED"], g["4CH", "ES"], sp2, sp4, **es_spacing)
                row.update(ef_from_gt_masks=ref["ef"], edv_from_gt_masks=ref["edv"], esv_from_gt_masks=ref["esv"])
            except ValueError:
                pass
        extra4 = views["4CH", "ED"]["item"].extra
        if "EF" in extra4:
            row["ef_reference"] = extra4["EF"]
        from apps.echo.stats import pct_error, worse_quality

        row["image_quality"] = worse_quality([views["2CH", "ED"]["item"].extra.get("image_quality"),
                                              extra4.get("image_quality")])
        for key, cfg_key in (("edv", "LVedv"), ("esv", "LVesv")):
            # reference volume: the cfg's (CAMUS 2019) if given, else the reference masks through the same code
            ref_v, src = (extra4[cfg_key], "cfg") if cfg_key in extra4 else (row.get(f"{key}_from_gt_masks"), "reference masks")
            if ref_v is not None and row.get(key) is not None:
                row[f"{key}_reference"], row[f"{key}_reference_source"] = ref_v, src
                row[f"{key}_pct_error"] = pct_error(row[key], ref_v)
        rows.append(row)
    return rows
