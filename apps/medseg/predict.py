"""``dualsci-medseg predict`` output: a Lightning prediction writer that saves the sampled pairs as files.

``predict`` runs ``PairObjective.sample`` (prompt -> pair) on the predict dataloader's prompts (the
validation slices' label sets by default). This callback writes every batch through the same
:class:`~apps.medseg.writer.PairWriter` as ``generate`` (NIfTI in nnU-Net v2 / MSD layouts, PNG
previews, ``manifest.jsonl``, ``DATASET_CARD.md``). The whole folder is built next to its final place
and renamed when prediction finishes (``dualsci.io.atomic_dir``): a failed run leaves nothing, and an
existing folder is never overwritten.

    dualsci-medseg predict --config apps/medseg/configs/demo.yaml --ckpt_path CKPT [--trainer.default_root_dir DIR]

The shipped configs already list this callback (output ``<default_root_dir>/predict``; another folder:
its ``out`` in a copy of the config — ``--trainer.callbacks.out`` reaches only the list's last callback).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Sequence

import lightning.pytorch as pl
from lightning.pytorch.callbacks import BasePredictionWriter

from apps.medseg.writer import GenerateError, PairWriter
from dualsci.io import atomic_dir, output_dir_problem, sha256_file
from dualsci.training import run_output_problem


class PairPredictionWriter(BasePredictionWriter):
    """Write predicted pairs (see module docstring).

    Args:
        out: output folder; default ``<trainer.default_root_dir>/predict``. Must not exist yet.
        spacing: voxel size (mm) written to the NIfTI affine.
        layouts: ``nnunet`` and/or ``msd``.
        previews: also write PNG previews.
    """

    def __init__(self, out: str | None = None, spacing: Sequence[float] = (1.0, 1.0, 1.0),
                 layouts: Sequence[str] = ("nnunet", "msd"), previews: bool = True) -> None:
        super().__init__(write_interval="batch")
        self.out = out
        self.spacing = tuple(float(s) for s in spacing)
        self.layouts = tuple(layouts)
        self.previews = previews
        self._stack: contextlib.ExitStack | None = None
        self._writer: PairWriter | None = None
        self._tmp: Path | None = None
        self._settings: dict = {}
        self.final_dir: Path | None = None

    def _target(self, trainer: pl.Trainer) -> Path:
        return Path(self.out) if self.out is not None else Path(trainer.default_root_dir) / "predict"

    def check(self, trainer: pl.Trainer) -> Path:
        """The output folder, or :class:`GenerateError` if it exists or cannot be created."""
        target = self._target(trainer)
        if target.exists():
            raise GenerateError(f"{target}: predict output folder already exists; choose a new one "
                                "(--trainer.default_root_dir) or remove it")
        problem = output_dir_problem(target, "predict output folder")
        if problem:
            raise GenerateError(problem)
        return target

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        objective = pl_module.objective
        target = self.check(trainer)
        ckpt = getattr(trainer, "ckpt_path", None)
        self._settings = {"verb": "predict", "checkpoint": str(ckpt) if ckpt else None,
                          "checkpoint_sha256": sha256_file(ckpt) if ckpt and Path(ckpt).exists() else None,
                          "steps": objective.sample_steps, "cfg_image": objective.sample_cfg[0],
                          "cfg_mask": objective.sample_cfg[1], "solver": "euler",
                          "spacing": list(self.spacing), "layouts": list(self.layouts)}
        self._stack = contextlib.ExitStack()
        self._tmp = self._stack.enter_context(atomic_dir(target))
        self.final_dir = target

    def write_on_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, prediction: Any,
                           batch_indices: Sequence[int] | None, batch: Any, batch_idx: int,
                           dataloader_idx: int = 0) -> None:
        net = pl_module.net
        prompts = [net.vocab.decode(p) for p in batch["prompt"]]
        if self._writer is None:  # one modality per dataset: the first prompt's (nnU-Net channel_names)
            modality = next((p.modality for p in prompts if p is not None), net.vocab.modalities[0])
            self._writer = PairWriter(self._tmp, net.label_dict, modality, self._settings, spacing=self.spacing,
                                      layouts=self.layouts, previews=self.previews)
        # The same seeds PairObjective.sample used: batch["seed"], else 0..B-1 within the batch.
        has_seed = "seed" in batch
        seeds = batch["seed"].tolist() if has_seed else list(range(len(prompts)))
        sampler = {"mode": "joint", "path": "rectified_flow", "solver": "euler", "steps": self._settings["steps"],
                   "cfg_image": self._settings["cfg_image"], "cfg_mask": self._settings["cfg_mask"]}
        for k, (img, msk) in enumerate(zip(prediction["image"], prediction["mask"])):
            case = f"pred_s{int(seeds[k]):06d}" if has_seed else f"pred_b{batch_idx:05d}_{k:03d}"
            self._writer.add(case, img, msk, prompts[k], {
                "seed": int(seeds[k]), "prompt_text": prompts[k].text() if prompts[k] else None,
                "checkpoint_sha256": self._settings["checkpoint_sha256"], "sampler": sampler})

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._writer is None:
            raise GenerateError(f"{self.final_dir}: predict produced no pairs (empty predict dataloader)")
        self._writer.finalize()
        self._writer = None
        stack, self._stack = self._stack, None
        stack.close()  # renames the temporary folder to its final name

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if self._stack is not None:
            stack, self._stack = self._stack, None
            stack.__exit__(type(exception), exception, exception.__traceback__)  # removes the temporary folder


def check_run_outputs(trainer: pl.Trainer) -> None:
    """Refuse, before Lightning writes anything, output folders the run could not create: the log folder
    (``default_root_dir``, loggers' ``save_dir``), when fitting the checkpoint folders, when predicting
    the prediction writer's folder. Called from ``MedSegDataModule.prepare_data``, which Lightning runs
    before its logger makes ``lightning_logs/version_N`` (a log folder under a file raised a raw
    ``NotADirectoryError`` there; a bad checkpoint folder failed only when the first checkpoint was saved).

    Raises:
        GenerateError: naming the folder and the problem.
    """
    problem = run_output_problem(trainer)
    if problem:
        raise GenerateError(problem)
    if trainer.predicting:
        for cb in trainer.callbacks:
            if isinstance(cb, PairPredictionWriter):
                cb.check(trainer)


__all__ = ["PairPredictionWriter", "check_run_outputs"]
