from __future__ import annotations

import numpy as np
import pytest

from apps.medseg.labels import LabelDict, LabelError
from apps.medseg.prompts import PromptError, PromptVocab


def test_both_label_directions_and_selection_with_merge():
    msd = LabelDict.from_mapping({"0": "background", "1": "spleen", "2": "kidney_right", "3": "kidney_left"})
    nn = LabelDict.from_mapping({"background": 0, "spleen": 1, "kidney_right": 2, "kidney_left": 3})
    assert msd.ids == nn.ids
    lab, lut = msd.select(["kidney", "spleen"], merge={"kidney": ["kidney_left", "kidney_right"]})
    assert lab.names == ("background", "kidney", "spleen")
    src = np.array([[0, 1], [2, 3]])
    assert msd.remap(src, lut).tolist() == [[0, 2], [1, 1]]
    assert lab.to_nnunet() == {"background": 0, "kidney": 1, "spleen": 2}
    assert lab.to_msd()["2"] == "spleen"


def test_unknown_labels_are_errors_that_list_the_allowed():
    src = LabelDict.from_mapping({"1": "spleen", "2": "liver"})
    with pytest.raises(LabelError, match="allowed: \\['liver', 'spleen'\\]"):
        src.select(["lung"])
    lab, lut = src.select(["liver"])
    with pytest.raises(LabelError, match="label values \\[7\\]"):
        src.remap(np.array([0, 7]), lut, source="x.nii.gz")
    with pytest.raises(LabelError, match="x.nii.gz"):
        lab.check_map(np.array([0, 1, 2]), source="x.nii.gz")


def test_prompt_parser_structured_and_free_text():
    v = PromptVocab(labels=("liver", "spleen", "kidney_left", "liver_lesion"))
    a = v.parse("modality=CT; region=abdomen; pathology=none; labels=spleen,liver")
    b = v.parse("abdominal CT scan with liver and spleen")
    assert a == b and a.labels == ("liver", "spleen")
    c = v.parse("MRI of the abdomen with kidney left, liver lesion and liver, tumour")
    assert c.modality == "MR" and c.pathology == "lesion" and c.labels == ("liver", "kidney_left", "liver_lesion")
    enc = v.encode(a)
    assert enc.shape == (v.size,) and enc[-1] == 0 and enc.sum() == 5
    assert v.null()[-1] == 1 and v.null().sum() == 1


@pytest.mark.parametrize("text,needle", [
    ("modality=PET", "allowed: \\['CT', 'MR'\\]"),
    ("modality=CT; colour=red", "unknown fields \\['colour'\\]; allowed: \\['modality', 'region', 'pathology', 'labels'\\]"),
    ("CT with pancreas", "unknown words \\['pancreas'\\].*labels \\['liver'"),
    ("modality=CT; labels=lung", "allowed: \\['liver', 'spleen'"),
    ("liver only", "unknown words"),
    ("liver and spleen", "no modality"),
])
def test_prompt_errors_list_allowed(text, needle):
    v = PromptVocab(labels=("liver", "spleen"))
    with pytest.raises(PromptError, match=needle):
        v.parse(text)
