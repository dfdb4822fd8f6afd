"""Structured prompts (modality, region, pathology, labels), a free-text parser, and their encoding.

No pretrained text encoder: a prompt is a set of vocabulary tokens, encoded as a multi-hot vector
``(V + 1,)`` whose last entry is the learned *null* token used for classifier-free guidance. The
model maps it through a learned embedding table (a Linear on the multi-hot vector = sum of token
embeddings).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import torch
from torch import Tensor

FIELDS = ("modality", "region", "pathology", "labels")
_SYNONYMS = {
    "ct": "CT", "computed tomography": "CT", "mr": "MR", "mri": "MR", "magnetic resonance": "MR",
    "abdominal": "abdomen", "healthy": "none", "normal": "none", "tumour": "lesion", "tumor": "lesion",
}


class PromptError(ValueError):
    """A prompt with an unknown field or value; the message lists the allowed ones."""


@dataclass(frozen=True)
class Prompt:
    """A structured prompt. ``labels`` are foreground names, kept sorted (order carries no meaning)."""

    modality: str
    region: str = "abdomen"
    pathology: str = "none"
    labels: tuple[str, ...] = ()

    def text(self) -> str:
        return (f"modality={self.modality}; region={self.region}; pathology={self.pathology}; "
                f"labels={','.join(self.labels)}")

    def to_json(self) -> dict:
        return {"modality": self.modality, "region": self.region, "pathology": self.pathology,
                "labels": list(self.labels)}


@dataclass(frozen=True)
class PromptVocab:
    """The allowed values of every field; defines the token order of the multi-hot encoding."""

    modalities: tuple[str, ...] = ("CT", "MR")
    regions: tuple[str, ...] = ("abdomen",)
    pathologies: tuple[str, ...] = ("none", "lesion")
    labels: tuple[str, ...] = field(default_factory=tuple)

    @property
    def size(self) -> int:
        """V + 1: every token plus the null token (last)."""
        return len(self.modalities) + len(self.regions) + len(self.pathologies) + len(self.labels) + 1

    def tokens(self) -> list[str]:
        return ([f"modality:{m}" for m in self.modalities] + [f"region:{r}" for r in self.regions]
                + [f"pathology:{p}" for p in self.pathologies] + [f"label:{n}" for n in self.labels] + ["<null>"])

    def to_json(self) -> dict:
        return {"modalities": list(self.modalities), "regions": list(self.regions),
                "pathologies": list(self.pathologies), "labels": list(self.labels)}

    @classmethod
    def from_json(cls, obj: Mapping) -> "PromptVocab":
        return cls(tuple(obj["modalities"]), tuple(obj["regions"]), tuple(obj["pathologies"]), tuple(obj["labels"]))

    # ------------------------------------------------------------------ validation / parsing
    def _allowed(self, name: str) -> tuple[str, ...]:
        return {"modality": self.modalities, "region": self.regions, "pathology": self.pathologies,
                "labels": self.labels}[name]

    def _check(self, name: str, value: str) -> str:
        allowed = self._allowed(name)
        canon = _SYNONYMS.get(value.strip().lower(), value.strip())
        for a in allowed:
            if a.lower() == canon.lower():
                return a
        raise PromptError(f"prompt field {name!r}: unknown value {value!r}; allowed: {list(allowed)}")

    def make(self, modality: str, region: str = "abdomen", pathology: str = "none",
             labels: Iterable[str] = ()) -> Prompt:
        """Validated :class:`Prompt` from field values."""
        names = sorted({self._check("labels", n) for n in labels}, key=self.labels.index)
        return Prompt(self._check("modality", modality), self._check("region", region),
                      self._check("pathology", pathology), tuple(names))

    def from_fields(self, fields: Mapping[str, object]) -> Prompt:
        unknown = [k for k in fields if k not in FIELDS]
        if unknown:
            raise PromptError(f"prompt: unknown fields {unknown}; allowed: {list(FIELDS)}")
        labels = fields.get("labels", ())
        if isinstance(labels, str):
            labels = [s for s in re.split(r"[,+\s]+", labels) if s]
        if "modality" not in fields:
            raise PromptError(f"prompt: field 'modality' is required; allowed values: {list(self.modalities)}")
        return self.make(str(fields["modality"]), str(fields.get("region", "abdomen")),
                         str(fields.get("pathology", "none")), labels)

    def parse(self, text: str) -> Prompt:
        """Parse a prompt.

        Two forms: structured ``"modality=CT; region=abdomen; labels=liver,spleen"`` (``key=value``
        separated by ``;``), or free text ``"abdominal CT with liver, spleen and a lesion"``, where every
        word or phrase must be a known value (or synonym) of some field; filler words (with, and, a, of,
        the, scan, image, slice) are ignored. Anything else raises :class:`PromptError` listing the
        allowed fields and values.
        """
        text = text.strip()
        if not text:
            raise PromptError(f"prompt: empty; allowed fields {list(FIELDS)} with values {self.to_json()}")
        if "=" in text:
            fields: dict[str, object] = {}
            for part in [p for p in text.split(";") if p.strip()]:
                if "=" not in part:
                    raise PromptError(f"prompt: {part.strip()!r} is not key=value; allowed fields: {list(FIELDS)}")
                key, value = (s.strip() for s in part.split("=", 1))
                fields[key.lower()] = value
            return self.from_fields(fields)
        return self._parse_free(text)

    def _parse_free(self, text: str) -> Prompt:
        fillers = {"with", "and", "a", "an", "of", "the", "scan", "scans", "image", "images", "slice",
                   "slices", "showing", "in", "pathology", "label", "labels", "mask", "no"}
        # Multi-word synonyms and underscored label names are matched first, on the lower-cased text.
        low = " " + re.sub(r"[,;.]+", " ", text.lower()) + " "
        found: dict[str, list[str]] = {"modality": [], "region": [], "pathology": [], "labels": []}
        phrases: list[tuple[str, str, str]] = []
        for name in ("modality", "region", "pathology", "labels"):
            for value in self._allowed(name):
                phrases.append((value.lower(), name, value))
                phrases.append((value.lower().replace("_", " "), name, value))
        for syn, canon in _SYNONYMS.items():
            for name in ("modality", "region", "pathology"):
                if canon in self._allowed(name):
                    phrases.append((syn, name, canon))
        for phrase, name, value in sorted(phrases, key=lambda p: -len(p[0])):
            pat = f" {phrase} "
            if pat in low:
                found[name].append(value)
                low = low.replace(pat, " ")
        leftovers = [w for w in low.split() if w not in fillers]
        if leftovers:
            raise PromptError(
                f"prompt: unknown words {leftovers}; allowed values: modality {list(self.modalities)}, "
                f"region {list(self.regions)}, pathology {list(self.pathologies)}, labels {list(self.labels)}")
        for name in ("modality", "region", "pathology"):
            if len(set(found[name])) > 1:
                raise PromptError(f"prompt: several values for {name!r}: {sorted(set(found[name]))}")
        if not found["modality"]:
            raise PromptError(f"prompt: no modality given; allowed: {list(self.modalities)}")
        return self.make(found["modality"][0], (found["region"] or ["abdomen"])[0],
                         (found["pathology"] or ["none"])[0], found["labels"])

    # ------------------------------------------------------------------ encoding
    def encode(self, prompt: Prompt) -> Tensor:
        """Multi-hot ``(V + 1,)`` float vector; the null entry is 0."""
        vec = torch.zeros(self.size)
        off = 0
        vec[off + self.modalities.index(prompt.modality)] = 1.0
        off += len(self.modalities)
        vec[off + self.regions.index(prompt.region)] = 1.0
        off += len(self.regions)
        vec[off + self.pathologies.index(prompt.pathology)] = 1.0
        off += len(self.pathologies)
        for name in prompt.labels:
            vec[off + self.labels.index(name)] = 1.0
        return vec

    def field_mask(self, fields: Sequence[str]) -> Tensor:
        """``(V + 1,)`` 0/1 vector selecting the tokens of ``fields`` (and the null token, always kept)."""
        unknown = [f for f in fields if f not in FIELDS]
        if unknown:
            raise PromptError(f"prompt fields {unknown} unknown; allowed: {list(FIELDS)}")
        sizes = {"modality": len(self.modalities), "region": len(self.regions),
                 "pathology": len(self.pathologies), "labels": len(self.labels)}
        parts = [torch.full((sizes[name],), float(name in fields)) for name in FIELDS]
        return torch.cat([*parts, torch.ones(1)])

    def decode(self, vec: Tensor) -> Prompt | None:
        """Inverse of :meth:`encode` for a ``(V + 1,)`` multi-hot vector; None for the null prompt."""
        on = (vec > 0.5).tolist()
        if on[-1]:
            return None
        toks = [t for t, flag in zip(self.tokens(), on) if flag]
        def pick(kind: str) -> list[str]:
            return [t.split(":", 1)[1] for t in toks if t.startswith(kind + ":")]
        mods = pick("modality")
        if len(mods) != 1:
            raise PromptError(f"prompt vector: expected one modality token, got {mods}")
        return self.make(mods[0], (pick("region") or ["abdomen"])[0], (pick("pathology") or ["none"])[0], pick("label"))

    def null(self) -> Tensor:
        """The null prompt ``(V + 1,)`` (only the null token set)."""
        vec = torch.zeros(self.size)
        vec[-1] = 1.0
        return vec

    def encode_batch(self, prompts: Sequence[Prompt]) -> Tensor:
        """``(B, V + 1)``."""
        return torch.stack([self.encode(p) for p in prompts])
