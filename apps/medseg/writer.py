"""One writer for generated pairs (``generate`` and ``predict``): NIfTI layouts, PNG previews, manifest, card.

Folder written under ``out``::

    generate_config.json     the settings (a resumed run must match them exactly)
    manifest.jsonl           one record per finished pair (seed, prompt, realised labels, hashes...)
    nnunet/Dataset{id}_{name}/{imagesTr,labelsTr,dataset.json}   and/or   msd/Task{id}_{name}/...
    previews/{case}.png      image | colour-coded mask, side by side (for a quick look, not for training)
    DATASET_CARD.md

Every file is written atomically (temp file + rename), and a pair enters the manifest only after all
its files exist, so the manifest is the list of complete pairs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
from torch import Tensor

from apps.medseg.data import WINDOWS, denormalise
from apps.medseg.labels import LabelDict
from apps.medseg.layouts import DatasetWriter
from apps.medseg.prompts import Prompt
from dualsci.io import JsonlManifest, is_atomic_temporary, sha256_file, write_json_atomic
from dualsci.io.atomic import atomic_write

VERSION = "0.2.0"

# Distinct colours for label ids 1.. (background black); cycled beyond the list.
_PALETTE = np.array([[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
                     [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212]], np.uint8)


class GenerateError(RuntimeError):
    """Refused generation request (bad folder, mismatched resume, bad checkpoint)."""


def remove_stale_temporaries(out: Path) -> list[Path]:
    """Delete the temporary files (``.<name>.<random>.tmp``) that ``atomic_write`` leaves when a run is
    killed in the middle of a write; a resumed run would otherwise keep them in the dataset folders."""
    stale = [p for p in out.rglob(".*.tmp") if is_atomic_temporary(p)]
    for p in stale:
        p.unlink()
    return stale


def prepare_out(out: Path, settings: dict) -> None:
    """Create ``out`` with its ``generate_config.json``, or accept it for resumption if the settings match.

    Raises:
        GenerateError: ``out`` holds other data, or a generation with other settings (the message names them).
    """
    cfg_path = out / "generate_config.json"
    if out.is_dir() and all(is_atomic_temporary(p) for p in out.iterdir()):
        # A run killed between creating ``out`` and renaming its generate_config.json leaves at most the
        # config's temporary file: nothing was generated yet, so the folder counts as empty.
        remove_stale_temporaries(out)
    if out.exists() and any(out.iterdir()):
        if not cfg_path.exists():
            raise GenerateError(f"{out}: folder holds other data (no generate_config.json); refusing to write into it")
        old = json.loads(cfg_path.read_text(encoding="utf-8"))
        if old != settings:
            diff = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
            raise GenerateError(f"{out}: holds a generation with other settings ({diff}); "
                                "resume needs the same command, or choose a new folder")
        remove_stale_temporaries(out)  # a killed run's half-written files
        return
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(cfg_path, settings)


def preview_png(path: Path, image: np.ndarray, mask: np.ndarray) -> None:
    """Write ``image (S, S)`` in [-1, 1] and ``mask (S, S)`` label ids side by side as an RGB PNG (S, 2S)."""
    from PIL import Image

    grey = np.clip((image + 1.0) * 127.5, 0, 255).astype(np.uint8)
    colour = np.zeros((*mask.shape, 3), np.uint8)
    fg = mask > 0
    colour[fg] = _PALETTE[(mask[fg] - 1) % len(_PALETTE)]
    rgb = np.concatenate([np.repeat(grey[..., None], 3, -1), colour], axis=1)
    with atomic_write(path, "wb") as handle:
        Image.fromarray(rgb).save(handle, format="png")


class PairWriter:
    """Writes generated pairs into ``out`` (see module docstring); resumable through the manifest.

    Args:
        out: output folder (created; refused if it holds other data or other settings).
        labels: the generator's label dictionary.
        modality: one modality for the whole dataset (nnU-Net ``channel_names``).
        settings: what defines the run (checkpoint hash, prompts, sampler...); stored and compared on resume.
        spacing: voxel size (mm) written to the NIfTI affine.
        layouts, name, dataset_id: see :class:`~apps.medseg.layouts.DatasetWriter`.
        previews: also write ``previews/{case}.png``.
    """

    def __init__(self, out: str | Path, labels: LabelDict, modality: str, settings: dict,
                 spacing: Sequence[float] = (1.0, 1.0, 1.0), layouts: Sequence[str] = ("nnunet", "msd"),
                 name: str = "MedSegSynth", dataset_id: int = 501, previews: bool = True, create: bool = True) -> None:
        self.out, self.labels, self.modality, self.settings = Path(out), labels, modality, settings
        if create:
            prepare_out(self.out, settings)
        self.writer = DatasetWriter(self.out, labels, modality, name=name, dataset_id=dataset_id, layouts=layouts,
                                    description="synthetic image-mask pairs from dualsci medseg, checkpoint "
                                                f"{str(settings.get('checkpoint_sha256'))[:12]}")
        self.manifest = JsonlManifest(self.out / "manifest.jsonl", key="id")
        self.affine = np.diag([*[float(s) for s in spacing], 1.0])
        self.spacing = [float(s) for s in spacing]
        self.window = WINDOWS.get(modality)
        self.previews = previews

    def done_keys(self) -> set:
        return self.manifest.done_keys()

    def add(self, case_id: str, image: Tensor, mask: Tensor, prompt: Prompt | None, record: dict) -> dict:
        """Write one pair and append its manifest record.

        Args:
            case_id: file stem of the pair.
            image: (C, S, S) in [-1, 1] (the centre channel is written: 2.5-D context channels are
                input only), or a 3-D patch (1, S, S, D); mask: (S, S) or (S, S, D) long label ids.
                A 2-D pair is written as a one-slice volume (S, S, 1), a 3-D pair as (S, S, D).
            prompt: the requested prompt (None = unconditional); requested vs realised labels are compared.
            record: extra manifest fields (seed, sampler, ...).

        Returns:
            the manifest record.
        """
        if mask.ndim not in (2, 3) or tuple(image.shape[1:]) != tuple(mask.shape):
            raise ValueError(f"{case_id}: image (C, *spatial) and mask (*spatial) must agree in 2-D or 3-D, got "
                             f"{tuple(image.shape)} and {tuple(mask.shape)}")
        centre = image[image.shape[0] // 2].float().numpy()
        img_np = denormalise(centre, self.window)
        msk_np = mask.numpy().astype(np.uint8)
        if mask.ndim == 2:
            img_np, msk_np, centre = img_np[:, :, None], msk_np[:, :, None], centre[:, :, None]
        rel = self.writer.add_case(case_id, img_np, msk_np, self.affine)
        if self.previews:
            png = self.out / "previews" / f"{case_id}.png"
            png.parent.mkdir(exist_ok=True)
            z = msk_np.shape[2] // 2  # the middle slice of a 3-D patch
            preview_png(png, centre[:, :, z], msk_np[:, :, z])
            rel["preview"] = {"png": str(png.relative_to(self.out))}
        realised = self.labels.present(msk_np)
        requested = list(prompt.labels) if prompt is not None else []
        rec = {"id": case_id, **record, "prompt": prompt.to_json() if prompt is not None else None,
               "requested_labels": requested, "realised_labels": realised,
               "missing_labels": [x for x in requested if x not in realised],
               "extra_labels": [x for x in realised if x not in requested] if prompt is not None else [],
               "qc": {"empty_mask": not realised},
               "shape": list(img_np.shape), "spacing": self.spacing, "files": rel,
               "sha256": {lay: {kind: sha256_file(self.out / p) for kind, p in f.items()} for lay, f in rel.items()},
               "version": VERSION}
        self.manifest.append(rec)
        return rec

    def finalize(self) -> list[dict]:
        """(Re)write every layout's ``dataset.json`` and the dataset card; returns all manifest records."""
        records = list(self.manifest.records())
        self.writer.finalize([r["id"] for r in records])
        write_card(self.out, self.labels, self.settings, records)
        return records


def write_card(out: Path, labels: LabelDict, settings: dict, records: list[dict]) -> Path:
    """``DATASET_CARD.md`` next to the data: what, how, labels, realised statistics, caveats."""
    counts: dict[str, int] = {}
    for r in records:
        for name in r["realised_labels"]:
            counts[name] = counts.get(name, 0) + 1
    empty = sum(r["qc"]["empty_mask"] for r in records)
    missing = sum(bool(r["missing_labels"]) for r in records)
    prompts = settings.get("prompts", [])
    lines = [
        "# Synthetic dataset card (dualsci medseg)", "",
        "**Synthetic data.** Every image and mask here was generated by a diffusion model; none is a patient scan.", "",
        f"- generator: dualsci medseg {VERSION}, checkpoint sha256 `{settings.get('checkpoint_sha256')}`",
        f"- pairs: {len(records)} (made by `{settings.get('verb', 'generate')}`), sampler rectified-flow "
        f"{settings.get('solver', 'euler')}, {settings.get('steps')} steps, CFG image {settings.get('cfg_image')} / "
        f"mask {settings.get('cfg_mask')}",
        f"- layouts: {', '.join(settings.get('layouts', []))} (NIfTI, spacing {settings.get('spacing')} mm, "
        "RAS affine; labels uint8); PNG previews in previews/ (image | mask)",
        f"- label dictionary: `{json.dumps(labels.to_msd())}`",
        f"- pairs containing each label: `{json.dumps(counts)}`",
        f"- QC: {empty} pairs with an empty mask, {missing} pairs missing at least one requested label "
        "(per-pair details in manifest.jsonl)",
        "- prompts: " + ("; ".join(json.dumps(p) for p in prompts) if len(prompts) <= 50
                         else f"{len(prompts)} prompts (see manifest.jsonl)"), "",
        "Licence of the synthetic data follows the generator's training data; see the training data's own card "
        "(TotalSegmentator sample files: Apache-2.0; phantoms: generated). Per-file SHA-256 hashes are in "
        "manifest.jsonl. Check `dualsci-medseg evaluate` results before training on this data.", "",
    ]
    path = out / "DATASET_CARD.md"
    with atomic_write(path, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines))
    return path


__all__ = ["PairWriter", "GenerateError", "remove_stale_temporaries", "prepare_out", "preview_png", "write_card", "VERSION"]
