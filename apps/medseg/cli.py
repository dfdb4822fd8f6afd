"""``dualsci-medseg``: LightningCLI ``fit | validate | test | predict`` plus ``generate`` and ``evaluate``.

    dualsci-medseg fit --config apps/medseg/configs/demo.yaml
    dualsci-medseg generate --ckpt CKPT --prompt "CT abdomen with liver and spleen" --n 8 --out OUT
    dualsci-medseg evaluate --real REAL_DIR --synthetic OUT --out EVAL
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


def _generate(argv: list[str]):
    """Generate N image-mask pairs per prompt into nnU-Net v2 and MSD layouts (resumable)."""
    from apps.medseg.generate import main as generate_main

    return generate_main(argv)


def _evaluate(argv: list[str]):
    """Evaluate a synthetic dataset: downstream UNet, alignment Dice, Fréchet distance, memorisation, report."""
    from apps.medseg.evaluate import main as evaluate_main

    return evaluate_main(argv)


def main(args: Sequence[str] | None = None):
    """Entry point of ``dualsci-medseg``; as a console script a bad dataset prints one line and exits 2."""
    from dualsci.training import DiffusionModule, build_cli, console_main

    from apps.medseg.data import DataError, LabelError
    from apps.medseg.datamodule import MedSegDataModule
    from apps.medseg.layouts import LayoutError
    from apps.medseg.writer import GenerateError  # output folders: existing, under a file, not writable

    return console_main(lambda: build_cli(DiffusionModule, MedSegDataModule, args=args, prog="dualsci-medseg",
                                          extra_subcommands={"generate": _generate, "evaluate": _evaluate}),
                        args, (DataError, LabelError, LayoutError, GenerateError))


if __name__ == "__main__":
    main()
