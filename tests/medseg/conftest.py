"""Fixtures of the medseg tests: a tiny phantom MSD dataset and the real TotalSegmentator files."""

from __future__ import annotations

import pytest

from apps.medseg.labels import LabelDict
from apps.medseg.phantom import write_phantom_msd

CT = "medseg/totalseg_ct_abdomen_3mm.nii.gz"
CT_SEG = "medseg/totalseg_ct_abdomen_3mm_seg.nii.gz"
MR = "medseg/totalseg_mr_abdomen_3mm.nii.gz"
MR_SEG = "medseg/totalseg_mr_abdomen_3mm_seg.nii.gz"
LABELS_JSON = "medseg/totalseg_labels.json"
ORGANS = ["liver", "spleen", "kidney_left", "kidney_right", "stomach"]


@pytest.fixture(scope="session")
def phantom_dir(tmp_path_factory):
    """A 3-case CT phantom in MSD layout (32 x 32 x 8)."""
    return write_phantom_msd(tmp_path_factory.mktemp("ph") / "msd", n_cases=3, modality="CT", seed=0,
                             shape=(32, 32, 8))


@pytest.fixture
def totalseg_ct(shared_file):
    src = LabelDict.from_json(shared_file(LABELS_JSON), key="total")
    return shared_file(CT), shared_file(CT_SEG), src
