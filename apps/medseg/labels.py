"""Label dictionaries: name <-> id per dataset, selection and merging of labels, validation of label maps.

A :class:`LabelDict` maps consecutive integer ids (0 = background) to names. Datasets arrive with
their own dictionaries (TotalSegmentator's 117 classes, MSD's ``{"1": "spleen"}``, nnU-Net's
``{"spleen": 1}``); :meth:`LabelDict.select` builds the dictionary the model trains on (a subset,
optionally merging several source labels into one) together with the look-up table that remaps a
source label map onto it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

BACKGROUND = "background"


class LabelError(ValueError):
    """A label map or label request that does not fit the dictionary."""


@dataclass(frozen=True)
class LabelDict:
    """Consecutive ids ``0..K-1`` with names; id 0 is always ``background``.

    Args:
        names: names of ids ``0..K-1`` in order; ``names[0]`` must be ``"background"``.
    """

    names: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.names or self.names[0] != BACKGROUND:
            raise LabelError(f"names: id 0 must be {BACKGROUND!r}, got {self.names[:1]}")
        if len(set(self.names)) != len(self.names):
            raise LabelError(f"names: duplicate label names in {self.names}")

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_mapping(cls, mapping: Mapping, source: str = "label mapping") -> "SourceLabels":
        """Read ``{"1": "spleen"}`` (MSD) or ``{"spleen": 1}`` (nnU-Net) into a sparse source dictionary."""
        ids: dict[int, str] = {}
        for key, value in mapping.items():
            if isinstance(value, (int, np.integer)) or (isinstance(value, str) and value.isdigit()
                                                         and not str(key).isdigit()):
                ids[int(value)] = str(key)  # nnU-Net direction: name -> id
            elif str(key).lstrip("-").isdigit():
                ids[int(key)] = str(value)  # MSD direction: id -> name
            else:
                raise LabelError(f"{source}: entry {key!r}: {value!r} is neither id->name nor name->id")
        ids.setdefault(0, BACKGROUND)
        return SourceLabels(ids, source)

    @classmethod
    def from_json(cls, path: str | os.PathLike, key: str | None = None) -> "SourceLabels":
        """Read a label JSON: a flat mapping, a ``dataset.json`` (its ``labels``) or a nested file (``key``)."""
        path = Path(path)
        try:
            obj = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise LabelError(f"{path}: cannot read label JSON ({err})") from err
        if key is not None:
            if key not in obj:
                raise LabelError(f"{path}: no key {key!r}; available: {sorted(obj)}")
            obj = obj[key]
        elif "labels" in obj and isinstance(obj["labels"], dict):
            obj = obj["labels"]
        return cls.from_mapping(obj, source=str(path))

    # ------------------------------------------------------------------ queries
    @property
    def num_classes(self) -> int:
        return len(self.names)

    @property
    def foreground(self) -> tuple[str, ...]:
        return self.names[1:]

    def id_of(self, name: str) -> int:
        if name not in self.names:
            raise LabelError(f"label {name!r} not in the dictionary; allowed: {list(self.foreground)}")
        return self.names.index(name)

    def to_msd(self) -> dict[str, str]:
        """MSD ``labels``: id string -> name."""
        return {str(i): n for i, n in enumerate(self.names)}

    def to_nnunet(self) -> dict[str, int]:
        """nnU-Net v2 ``labels``: name -> id."""
        return {n: i for i, n in enumerate(self.names)}

    def to_json(self) -> dict[str, str]:
        return self.to_msd()

    def check_map(self, label: np.ndarray, source: str = "label map") -> None:
        """Raise :class:`LabelError` naming ``source`` if ``label`` holds ids outside ``0..K-1``."""
        values = np.unique(label)
        bad = [int(v) for v in values if v < 0 or v >= self.num_classes or v != int(v)]
        if bad:
            raise LabelError(f"{source}: label values {bad} not in the dictionary {self.to_msd()}")

    def present(self, label: np.ndarray) -> dict[str, int]:
        """Voxel count per foreground name present in ``label`` (only names with count > 0)."""
        counts = np.bincount(np.asarray(label, dtype=np.int64).ravel(), minlength=self.num_classes)
        return {self.names[i]: int(c) for i, c in enumerate(counts) if i > 0 and c > 0}


@dataclass(frozen=True)
class SourceLabels:
    """A dataset's own (possibly sparse) id -> name dictionary, before selection."""

    ids: dict[int, str]
    source: str = "label mapping"

    @property
    def names(self) -> list[str]:
        return [self.ids[i] for i in sorted(self.ids)]

    def as_dict(self) -> LabelDict:
        """Keep every label, renumbered consecutively in id order."""
        return self.select([n for i, n in sorted(self.ids.items()) if i != 0])[0]

    def select(
        self,
        labels: Sequence[str],
        merge: Mapping[str, Sequence[str]] | None = None,
    ) -> tuple[LabelDict, np.ndarray]:
        """Build the training dictionary and its look-up table.

        Args:
            labels: output label names in output id order (1, 2, ...). A name is either a source name or
                a key of ``merge``.
            merge: output name -> source names merged into it (e.g. ``{"kidney": ["kidney_left",
                "kidney_right"]}``).

        Returns:
            ``(LabelDict, lut)``; ``lut[source_id]`` is the output id (0 for unselected source labels).
        """
        merge = dict(merge or {})
        by_name = {n: i for i, n in self.ids.items()}
        allowed = sorted(n for n in by_name if n != BACKGROUND)
        lut = np.zeros(max(self.ids) + 1, dtype=np.int64)
        for out_id, name in enumerate(labels, start=1):
            sources = merge.get(name, [name])
            for src in sources:
                if src not in by_name:
                    raise LabelError(f"{self.source}: label {src!r} not in the dictionary; allowed: {allowed}")
                lut[by_name[src]] = out_id
        for name in merge:
            if name not in labels:
                raise LabelError(f"merge: output label {name!r} is not in the selected labels {list(labels)}")
        return LabelDict((BACKGROUND, *labels)), lut

    def remap(self, label: np.ndarray, lut: np.ndarray, source: str = "label map") -> np.ndarray:
        """Apply ``lut`` to a source label map after checking its ids exist in this dictionary."""
        values = np.unique(label)
        bad = [int(v) for v in values if int(v) not in self.ids]
        if bad:
            raise LabelError(f"{source}: label values {bad} not in the dictionary of {self.source}")
        return lut[np.asarray(label, dtype=np.int64)]
