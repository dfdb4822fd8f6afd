"""CAMUS patient splits: read the official lists, or rebuild them by the documented rule.

The official 2023 split (``database_split/subgroup_{training,validation,testing}.txt``, 400 / 50 / 50
patients) and the 2019 legacy 10-fold lists (``listSubGroups/subGroup{k}_{training,validation,
testing}.txt``) are **files shipped with CAMUS**; the patient lists themselves are not in our method card,
so when the files are present they are read verbatim. When they are absent (e.g. a partial copy) the
documented rule is applied: the organisers balanced the groups on EF and image quality, so patients are
sorted by (ImageQuality, EF, id) and dealt in blocks of ten — rank mod 10 = 1 validation, = 2 testing,
the other 8 training (→ exactly 400 / 50 / 50 for 500 patients; small sets still get val/test early), and fold ``k`` tests on every patient whose rank mod 10
is ``k−1`` and validates on rank mod 10 = ``k mod 10``. Both rules are ours, not the organisers' lists.
Splits are always by patient, never by frame.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

_QORDER = {"Good": 0, "Medium": 1, "Poor": 2}


def _ranked(patients: Sequence[str], efs: Sequence[float], qualities: Sequence[str]) -> list[str]:
    keyed = sorted(zip(patients, efs, qualities), key=lambda r: (_QORDER.get(r[2], 3), float(r[1]), r[0]))
    return [p for p, _, _ in keyed]


def official_split_lists(patients: Sequence[str], efs: Sequence[float], qualities: Sequence[str]) -> dict[str, list[str]]:
    """Rule-based 80 / 10 / 10 split balanced on quality and EF (see module docstring)."""
    out: dict[str, list[str]] = {"training": [], "validation": [], "testing": []}
    for rank, p in enumerate(_ranked(patients, efs, qualities)):
        slot = rank % 10
        out["validation" if slot == 1 else "testing" if slot == 2 else "training"].append(p)
    return {k: sorted(v) for k, v in out.items()}


def fold_lists(patients: Sequence[str], efs: Sequence[float], qualities: Sequence[str], n_folds: int = 10) -> list[dict[str, list[str]]]:
    """Rule-based legacy folds: list of ``n_folds`` dicts training/validation/testing."""
    groups: list[list[str]] = [[] for _ in range(n_folds)]
    for rank, p in enumerate(_ranked(patients, efs, qualities)):
        groups[rank % n_folds].append(p)
    folds = []
    for k in range(n_folds):
        test, val = groups[k], groups[(k + 1) % n_folds]
        train = [p for j, g in enumerate(groups) if j not in (k, (k + 1) % n_folds) for p in g]
        folds.append({"training": sorted(train), "validation": sorted(val), "testing": sorted(test)})
    return folds


def read_list(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def check_disjoint(split: dict[str, list[str]], where: str = "split") -> None:
    """Raise ``ValueError`` if a patient sits in two groups (frame-level leakage guard)."""
    seen: dict[str, str] = {}
    for name, patients in split.items():
        for p in patients:
            if p in seen:
                raise ValueError(f"{where}: patient {p} is in both {seen[p]} and {name}")
            seen[p] = name
