"""``dualsci-medseg generate``: N pairs per prompt into nnU-Net v2 + MSD layouts, resumable.

Output folder::

    OUT/generate_config.json     the settings (a resumed run must match them exactly)
    OUT/manifest.jsonl           one record per finished pair (seed, prompt, realised labels, hashes…)
    OUT/nnunet/Dataset501_MedSegSynth/{imagesTr,labelsTr,dataset.json}
    OUT/msd/Task01_MedSegSynth/{imagesTr,labelsTr,dataset.json}
    OUT/DATASET_CARD.md

Pairs are generated in batches and written as they finish (memory does not grow with N); a killed
run restarted with the same command skips finished pairs. A folder holding anything else is refused.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import yaml

from apps.medseg.model import MedSegNet
from apps.medseg.objective import PairObjective
from apps.medseg.prompts import Prompt
from apps.medseg.sampling import MODES, sample_pairs
from apps.medseg.writer import VERSION, GenerateError, PairWriter
from dualsci.io import output_dir_problem, sha256_file
from dualsci.io.atomic import atomic_write
_ALLOWED = {"net": "apps.medseg.model.MedSegNet", "objective": "apps.medseg.objective.PairObjective"}


# ------------------------------------------------------------------------------------------ checkpoints
def save_generator(path: str | Path, net: MedSegNet, net_args: dict, objective_args: dict | None = None) -> Path:
    """Write a self-contained generator file (plain types only: loads with ``weights_only=True``)."""
    path = Path(path)
    blob = {"medseg_net": dict(net_args), "medseg_objective": dict(objective_args or {}),
            "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()}}
    with atomic_write(path, "wb") as handle:
        torch.save(blob, handle)
    return path


def load_generator(path: str | Path) -> tuple[MedSegNet, PairObjective]:
    """Load a generator from a Lightning checkpoint of ``dualsci-medseg fit`` or a ``save_generator`` file."""
    path = Path(path)
    if not path.exists():
        raise GenerateError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling errors come in several types
        raise GenerateError(f"{path}: cannot load checkpoint with weights_only=True ({err})") from err
    if "medseg_net" in ckpt:
        net_args, obj_args, state = ckpt["medseg_net"], ckpt["medseg_objective"], ckpt["state_dict"]
    elif "dualsci_config" in ckpt:
        cfg = yaml.safe_load(ckpt["dualsci_config"])["model"]["init_args"]
        for key, cls in _ALLOWED.items():
            if cfg.get(key, {}).get("class_path") != cls:
                raise GenerateError(f"{path}: model.{key} is {cfg.get(key, {}).get('class_path')!r}, expected {cls!r}")
        net_args, obj_args = cfg["net"].get("init_args", {}), cfg["objective"].get("init_args", {})
        state = {k[4:]: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
    else:
        raise GenerateError(f"{path}: neither a medseg generator file nor a dualsci checkpoint")
    if "prompt_embed.weight" in state:
        raise GenerateError(
            f"{path}: checkpoint uses the old prompt conditioning (image and mask prompts concatenated into one "
            "global condition); this version routes prompts per stream (cond_a / cond_b). Retrain it with "
            "`dualsci-medseg fit` (the weights cannot be converted)")
    net = MedSegNet(**net_args)
    try:
        net.load_state_dict(state)
    except RuntimeError as err:
        raise GenerateError(f"{path}: weights do not fit the model described in the checkpoint ({err})") from err
    return net.eval(), PairObjective(**obj_args)


# ------------------------------------------------------------------------------------------ given masks
def read_masks(source: str | Path, net: MedSegNet) -> tuple[list[tuple[str, torch.Tensor]], list[str]]:
    """Labelled axial slices ``(source "file:z", (S, S) long)`` of user label maps, in the model's ids,
    and the model's labels that the folder's dictionary lacks (recorded in the manifest).

    ``source``: an MSD / nnU-Net folder (label names from its dataset.json; the labels it shares with
    the model are mapped, the others are background) or one label NIfTI (ids must already be the
    model's). Volumes are reoriented to RAS; slices are padded square and resized by nearest neighbour;
    empty slices are skipped; a map without any labelled voxel is an error.
    """
    from apps.medseg.data import fit_square, require_nonempty
    from apps.medseg.layouts import read_dataset

    source = Path(source)
    if not source.exists():
        raise GenerateError(f"{source}: --masks file or folder not found")
    absent: list[str] = []
    if source.is_dir():
        idx = read_dataset(source)
        lut, absent = _shared_label_lut(idx.labels, net.label_dict, source)
        files = [(c.label, idx.labels, lut) for c in idx.cases]
    else:
        files = [(source, None, None)]
    out = []
    for path, src, lut in files:
        raw = _read_label_map(path)
        lab = src.remap(raw, lut, source=str(path)) if src is not None else raw
        net.label_dict.check_map(lab, source=str(path))
        require_nonempty(lab, str(path))
        lab = lab.reshape(*lab.shape[:2], -1)
        for z in range(lab.shape[2]):
            if lab[:, :, z].any():
                m = fit_square(torch.from_numpy(lab[None, :, :, z]), net.image_size, "nearest")[0].long()
                out.append((f"{path}:{z}", m))
    return out, absent


def _shared_label_lut(src, model, source: Path) -> tuple[np.ndarray, list[str]]:
    """``(lut, absent)``: ``lut[source id]`` is the model's id of that label name (0 for labels the model
    does not know); ``absent`` the model's labels the dataset does not name. A real dataset rarely has
    all of a model's labels, so only a dictionary sharing none of them is an error."""
    lut = np.zeros(max(src.ids) + 1, dtype=np.int64)
    for sid, name in src.ids.items():
        if sid > 0 and name in model.foreground:
            lut[sid] = model.id_of(name)
    absent = [name for name in model.foreground if name not in src.ids.values()]
    if not lut.any():
        raise GenerateError(f"{source}: none of the model's labels {list(model.foreground)} is in the dataset's "
                            f"dictionary {src.names}")
    return lut, absent


def _read_label_map(path: str | Path) -> np.ndarray:
    """Integer label ids of a NIfTI reoriented to RAS; an unreadable or truncated file is a DataError
    naming it (nibabel raises EOFError, zlib errors, ImageFileError... without the file name)."""
    import nibabel as nib

    from apps.medseg.data import DataError

    try:
        data = np.asarray(nib.as_closest_canonical(nib.load(str(path))).dataobj)
    except Exception as err:
        raise DataError(f"{path}: unreadable label NIfTI ({type(err).__name__}: {err})") from err
    return np.rint(data).astype(np.int64)


def _hash_masks(source: str | Path | None) -> str | None:
    if source is None:
        return None
    source = Path(source)
    files = sorted(source.rglob("*.nii*")) if source.is_dir() else [source]
    digest = __import__("hashlib").sha256()
    for f in files:
        digest.update(sha256_file(f).encode())
    return digest.hexdigest()


# ------------------------------------------------------------------------------------------ generation
def _settings(args: argparse.Namespace, ckpt_hash: str, prompts: Sequence[Prompt]) -> dict:
    return {"checkpoint_sha256": ckpt_hash, "prompts": [p.to_json() for p in prompts], "n": args.n,
            "seed": args.seed, "steps": args.steps, "cfg_image": args.cfg[0], "cfg_mask": args.cfg[1],
            "solver": args.solver, "spacing": list(args.spacing), "layouts": list(args.layouts),
            "name": args.name, "dataset_id": args.dataset_id, "bf16": args.bf16,
            "masks": args.masks, "mask_sha256": args.mask_sha256}


def generate(
    checkpoint: str | Path,
    prompts: Sequence[str],
    out: str | Path,
    n: int = 4,
    seed: int = 0,
    steps: int = 20,
    cfg: tuple[float, float] = (2.0, 2.0),
    batch: int = 8,
    solver: str = "euler",
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    layouts: Sequence[str] = ("nnunet", "msd"),
    name: str = "MedSegSynth",
    dataset_id: int = 501,
    progress: bool = True,
    max_pairs: int | None = None,
    bf16: bool = False,
    masks: str | Path | None = None,
    mask_modality: str = "CT",
) -> dict:
    """Generate ``n`` pairs for each prompt (see module docstring). Returns a summary dict.

    With ``masks`` (an MSD / nnU-Net folder, or one label NIfTI, whose label names match the model's
    dictionary), every labelled axial slice of every label map becomes a request: the mask stream is
    given clean and only images are generated (mask -> image); the prompt is built from the labels in
    the slice and ``mask_modality``; ``prompts`` must then be empty. ``max_pairs`` stops after that many
    new pairs (used to test resumption).
    """
    check_options(out, n, steps, batch, cfg, spacing, layouts, name, dataset_id)  # before anything is read or written
    net, objective = load_generator(checkpoint)
    given: list = []
    absent: list[str] = []
    if masks is not None:
        if net.spatial_dims == 3:
            raise GenerateError("--masks (mask -> image for the slices of label maps) needs a 2-D generator; "
                                "this checkpoint is 3-D (spatial_dims=3): give prompts instead")
        if prompts:
            raise GenerateError("give either prompts or masks, not both")
        given, absent = read_masks(masks, net)
        parsed = [net.vocab.make(mask_modality, labels=net.label_dict.present(m.numpy())) for _, m in given]
        prompts = [p.text() for p in parsed]
    else:
        parsed = [net.vocab.parse(p) for p in prompts]  # PromptError lists the allowed values
    if not parsed:
        raise GenerateError("nothing to generate: no prompt, or no labelled slice in the masks")
    args = argparse.Namespace(n=n, seed=seed, steps=steps, cfg=tuple(float(c) for c in cfg), solver=solver,
                              spacing=tuple(float(s) for s in spacing), layouts=tuple(layouts), name=name,
                              dataset_id=dataset_id, bf16=bool(bf16),
                              masks=str(Path(masks).resolve()) if masks else None,  # one folder, one spelling
                              mask_sha256=_hash_masks(masks))
    out = Path(out)
    ckpt_hash = sha256_file(checkpoint)
    settings = _settings(args, ckpt_hash, parsed)
    modality = parsed[0].modality
    if any(p.modality != modality for p in parsed):
        raise GenerateError("all prompts of one dataset must share one modality (nnU-Net channel_names)")
    writer = PairWriter(out, net.label_dict, modality, settings, spacing=args.spacing, layouts=layouts,
                        name=name, dataset_id=dataset_id)
    done = writer.done_keys()
    todo = [(i, j, seed + i * n + j) for i in range(len(parsed)) for j in range(n)]
    todo = [(i, j, s) for i, j, s in todo if f"p{i:02d}_s{s:06d}" not in done]
    if max_pairs is not None:
        todo = todo[:max_pairs]
    from tqdm import tqdm

    bar = tqdm(total=len(todo), desc="generate", unit="pair", disable=not progress, file=sys.stderr)
    mode = "mask2image" if given else "joint"
    sampler = {"solver": solver, "steps": steps, "cfg_image": args.cfg[0], "cfg_mask": args.cfg[1],
               "mode": mode, "path": "rectified_flow", "bf16": bf16}
    t_start = time.time()
    for k in range(0, len(todo), batch):
        chunk = todo[k:k + batch]
        t0 = time.time()
        prompt_vecs = net.vocab.encode_batch([parsed[i] for i, _, _ in chunk])
        mask_in = torch.stack([given[i][1] for i, _, _ in chunk]) if given else None
        images, masks = sample_pairs(net, objective, prompt_vecs, [s for _, _, s in chunk], steps=steps,
                                     cfg_scale=args.cfg, solver=solver, bf16=bf16, mode=mode, mask=mask_in)
        per_pair = (time.time() - t0) / len(chunk)
        for (i, j, s), img, msk in zip(chunk, images, masks):
            writer.add(f"p{i:02d}_s{s:06d}", img, msk, parsed[i], {
                "prompt_index": i, "pair_index": j, "seed": s, "prompt_text": prompts[i],
                "checkpoint_sha256": ckpt_hash, "sampler": sampler,
                "mask_source": given[i][0] if given else None, "mask_labels_absent": absent,
                "seconds": per_pair})
        writer.writer.finalize([r["id"] for r in writer.manifest.records()])
        bar.update(len(chunk))
    bar.close()
    records = writer.finalize()
    elapsed = time.time() - t_start
    return {"out": str(out), "pairs": len(records), "new_pairs": len(todo), "seconds": elapsed,
            "pairs_per_second": len(todo) / elapsed if todo and elapsed > 0 else None,  # None: JSON null on a resume
            "mask_labels_absent": absent}


def check_options(out, n, steps, batch, cfg, spacing, layouts, name="MedSegSynth", dataset_id=501) -> None:
    """Raise :class:`GenerateError` for settings that cannot give a dataset, before ``out`` is created
    (a folder left with a bad ``generate_config.json`` would refuse the corrected command as a resume)."""
    from apps.medseg.layouts import LAYOUTS

    for option, value in (("n", n), ("steps", steps), ("batch", batch)):
        if value < 1:
            raise GenerateError(f"--{option} must be >= 1, got {value}")
    if not all(np.isfinite(c) for c in cfg):
        raise GenerateError(f"--cfg must be finite numbers, got {list(cfg)}")
    if not all(np.isfinite(s) and s > 0 for s in spacing):  # a zero zoom makes the NIfTI affine singular
        raise GenerateError(f"--spacing must be positive finite millimetres, got {list(spacing)}")
    bad = [x for x in layouts if x not in LAYOUTS]
    if bad or not layouts:
        raise GenerateError(f"--layouts: unknown {bad}; allowed: {list(LAYOUTS)}")
    # the folder is nnunet/Dataset{id:03d}_{name}: nnU-Net v2 ids are 1..999, and a name with "/" or ".."
    # put the dataset elsewhere (`--name ../x` wrote nnunet/x, `--dataset-id -1` Dataset-01_...)
    if not 1 <= dataset_id <= 999:
        raise GenerateError(f"--dataset-id must be 1..999 (nnU-Net v2 Dataset###_Name), got {dataset_id}")
    if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
        raise GenerateError(f"--name must be letters, digits, '_' or '-' (a folder name part), got {name!r}")
    problem = output_dir_problem(out)
    if problem:
        raise GenerateError(problem)


def _floats(text: str, n: int, name: str) -> tuple[float, ...]:
    """``n`` numbers from ``"a"`` (repeated) or ``"a,b,..."``; GenerateError naming the option otherwise."""
    try:
        vals = tuple(float(v) for v in text.split(","))
    except ValueError:
        vals = ()
    if len(vals) == 1:
        vals = vals * n
    if len(vals) != n:
        raise GenerateError(f"--{name}: expected 1 or {n} comma-separated numbers, got {text!r}")
    return vals


def main(argv: list[str] | None = None) -> dict:
    """Generate N image-mask pairs per prompt into nnU-Net v2 and MSD layouts (resumable)."""
    from apps.medseg.data import DataError
    from apps.medseg.labels import LabelError
    from apps.medseg.layouts import LayoutError
    from apps.medseg.prompts import PromptError

    ap = argparse.ArgumentParser(prog="dualsci-medseg generate", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", required=True, help="checkpoint of `dualsci-medseg fit` (.ckpt) or a generator .pt")
    ap.add_argument("--masks", default=None,
                    help="mask -> image: an MSD/nnU-Net folder or a label NIfTI; every labelled slice gets --n images")
    ap.add_argument("--mask-modality", default="CT", help="modality of the images generated for --masks")
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast for the network (CPUs with AMX/AVX512-BF16)")
    ap.add_argument("--prompt", action="append", default=[],
                    help="prompt, repeatable: 'CT abdomen with liver and spleen' or 'modality=CT; labels=liver,spleen'")
    ap.add_argument("--out", required=True)
    ap.add_argument("--n", type=int, default=4, help="pairs per prompt")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--cfg", default="2.0", help="guidance scale, one value or 'image,mask'")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--solver", choices=["euler", "heun"], default="euler")
    ap.add_argument("--spacing", default="1.0,1.0,1.0", help="voxel size written to the NIfTI affine (mm)")
    ap.add_argument("--layouts", default="nnunet,msd")
    ap.add_argument("--name", default="MedSegSynth")
    ap.add_argument("--dataset-id", type=int, default=501)
    ap.add_argument("--no-progress", action="store_true")
    a = ap.parse_args(argv)
    try:
        cfg, spacing = _floats(a.cfg, 2, "cfg"), _floats(a.spacing, 3, "spacing")
        res = generate(a.ckpt, a.prompt, a.out, n=a.n, seed=a.seed, steps=a.steps, cfg=cfg,
                       batch=a.batch, solver=a.solver, spacing=spacing,
                       layouts=a.layouts.split(","), name=a.name, dataset_id=a.dataset_id, progress=not a.no_progress,
                       bf16=a.bf16, masks=a.masks, mask_modality=a.mask_modality)
    except (GenerateError, PromptError, LabelError, DataError, LayoutError) as err:
        print(f"dualsci-medseg generate: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None  # 2: bad input, as argparse and `dualsci-echo segment`
    print(json.dumps(res))
    return res


__all__ = ["generate", "load_generator", "save_generator", "main", "MODES"]
