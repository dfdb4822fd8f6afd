"""The in-memory episode container every reader returns and every writer takes.

All formats (diffusion-policy replay zarr, LeRobot v2.1/v3, robomimic HDF5) are decoded into one
`EpisodeSet`: per-frame fields concatenated over episodes along time plus cumulative exclusive
`episode_ends`, exactly the replay-buffer layout, so windows and statistics are written once.
Episodes without actions (video-only demonstrations) are flagged in `has_action`; their action rows
are zeros and must never reach an action loss.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np


class DataError(ValueError):
    """Bad input data; the message names the file, the episode and the key."""


def data_error(source: str, problem: str, episode: int | None = None, key: str | None = None) -> DataError:
    """Build a `DataError` whose message always starts with the file and locates the problem."""
    where = [str(source)]
    if episode is not None:
        where.append(f"episode {episode}")
    if key is not None:
        where.append(f"key '{key}'")
    return DataError(": ".join([", ".join(where), problem]))


@dataclass
class EpisodeSet:
    """Episodes of per-frame fields.

    Attributes:
        fields: name -> array `(N, ...)`, frames of all episodes concatenated along axis 0.
            Conventional names: ``image`` `(N, H, W, 3)` uint8, ``state`` `(N, D_s)`, ``action``
            `(N, D_a)`; anything else (``keypoint``, ``agent_pos`` ...) is carried along.
        episode_ends: `(E,)` int64 cumulative exclusive ends (episode e spans `[ends[e-1], ends[e])`).
        has_action: `(E,)` bool, False for video-only episodes.
        fps: frames per second (10 for PushT).
        source: file the set came from (used in error messages).
        meta: free-form metadata carried through conversions (task names, env args).
        episode_ids: `(E,)` the file's index of each episode (default 0..E-1). Subsets (`select`,
            readers given ``episodes=``) keep them, so errors name the episode as the file numbers it.
    """

    fields: dict[str, np.ndarray]
    episode_ends: np.ndarray
    has_action: np.ndarray | None = None
    fps: float = 10.0
    source: str = "<memory>"
    meta: dict = field(default_factory=dict)
    episode_ids: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.episode_ends = np.asarray(self.episode_ends, dtype=np.int64).reshape(-1)
        if self.episode_ids is None:
            self.episode_ids = np.arange(len(self.episode_ends))
        self.episode_ids = np.asarray(self.episode_ids, dtype=np.int64).reshape(-1)
        if self.has_action is None:
            self.has_action = np.full(len(self.episode_ends), "action" in self.fields, dtype=bool)
        self.has_action = np.asarray(self.has_action, dtype=bool).reshape(-1)
        ends = self.episode_ends
        if len(ends) == 0:
            raise data_error(self.source, "no episodes", key="meta/episode_ends")
        if np.any(np.diff(np.concatenate([[0], ends])) <= 0):
            bad = int(np.argmax(np.diff(np.concatenate([[0], ends])) <= 0))
            raise data_error(self.source, "episode_ends must be strictly increasing (empty episode)",
                             episode=bad, key="meta/episode_ends")
        for name, arr in (("has_action", self.has_action), ("episode_ids", self.episode_ids)):
            if len(arr) != len(ends):
                raise data_error(self.source, f"{name} has {len(arr)} entries for {len(ends)} episodes")
        for name, arr in self.fields.items():
            if len(arr) != ends[-1]:
                raise data_error(self.source, f"has {len(arr)} frames but episode_ends says {int(ends[-1])}",
                                 key=name)

    # ----------------------------------------------------------------------------------- access
    @property
    def n_episodes(self) -> int:
        return len(self.episode_ends)

    @property
    def n_frames(self) -> int:
        return int(self.episode_ends[-1])

    @property
    def starts(self) -> np.ndarray:
        """`(E,)` first frame index of each episode."""
        return np.concatenate([[0], self.episode_ends[:-1]]).astype(np.int64)

    @property
    def lengths(self) -> np.ndarray:
        return self.episode_ends - self.starts

    def episode(self, e: int) -> dict[str, np.ndarray]:
        """Fields of episode `e` (views, `(T_e, ...)`)."""
        s, t = int(self.starts[e]), int(self.episode_ends[e])
        return {k: v[s:t] for k, v in self.fields.items()}

    def file_episode(self, e: int) -> int:
        """The file's index of episode `e` of this set (what error messages name)."""
        return int(self.episode_ids[e])

    def episode_index(self) -> np.ndarray:
        """`(N,)` episode id of every frame."""
        return np.repeat(np.arange(self.n_episodes), self.lengths)

    def select(self, episodes) -> "EpisodeSet":
        """A new set holding only the given episode ids (in that order)."""
        episodes = [int(e) for e in episodes]
        idx = np.concatenate([np.arange(self.starts[e], self.episode_ends[e]) for e in episodes])
        ends = np.cumsum(self.lengths[episodes])
        return EpisodeSet({k: v[idx] for k, v in self.fields.items()}, ends, self.has_action[episodes],
                          self.fps, self.source, dict(self.meta), self.episode_ids[episodes])

    @staticmethod
    def concat(sets: list["EpisodeSet"]) -> "EpisodeSet":
        """Concatenate episode sets; fields missing in a set (e.g. ``action`` in video-only data) are
        zero-filled and those episodes get ``has_action = False``."""
        keys = sorted(set().union(*[s.fields for s in sets]))
        fields, ends, has_action, offset = {}, [], [], 0
        ids = np.concatenate([s.episode_ids for s in sets])  # each part keeps its own file's numbering
        for k in keys:
            ref = next(s.fields[k] for s in sets if k in s.fields)
            for s in sets:  # e.g. a video-only set of another image size: numpy's error would name nothing
                if k in s.fields and s.fields[k].shape[1:] != ref.shape[1:]:
                    raise data_error(s.source, f"per-frame shape {s.fields[k].shape[1:]} differs from "
                                     f"{ref.shape[1:]} in {next(t.source for t in sets if k in t.fields)}", key=k)
            parts = [s.fields[k] if k in s.fields else np.zeros((s.n_frames,) + ref.shape[1:], ref.dtype)
                     for s in sets]
            fields[k] = np.concatenate(parts)
        for s in sets:
            ends.append(s.episode_ends + offset)
            offset += s.n_frames
            has_action.append(s.has_action & ("action" in s.fields))
        return EpisodeSet(fields, np.concatenate(ends), np.concatenate(has_action), sets[0].fps,
                          "+".join(s.source for s in sets), dict(sets[0].meta), ids)

    # ------------------------------------------------------------------------------ validation
    def check_camera_frames(self) -> None:
        """Camera fields (``image``, ``image_<cam>``) must be RGB `(N, H, W, 3)`; writers check before
        writing, so the error names the source and key (a video encoder would only know its scratch
        buffer; robomimic would store grey frames as a low-dimensional observation)."""
        for name, x in self.fields.items():
            if (name == "image" or name.startswith("image_")) and (x.ndim != 4 or x.shape[-1] != 3):
                raise data_error(self.source, f"camera frames must be (N, H, W, 3) RGB, got {tuple(x.shape)}",
                                 key=name)

    def validate(self, min_length: int = 1, required: tuple[str, ...] = ()) -> None:
        """Raise `DataError` (naming file, episode, key) on missing keys, NaN/inf values in float
        fields of action-bearing episodes, or episodes shorter than `min_length` frames."""
        for k in required:
            if k not in self.fields:
                raise data_error(self.source, f"missing key (have {sorted(self.fields)})", key=k)
        short = np.nonzero(self.lengths < min_length)[0]
        if len(short):
            e = int(short[0])
            raise data_error(self.source, f"episode has {int(self.lengths[e])} frames, shorter than the "
                             f"required horizon of {min_length}", episode=self.file_episode(e))
        epi = self.episode_index()
        for k, v in self.fields.items():
            if not np.issubdtype(v.dtype, np.floating):
                continue
            flat = v.reshape(len(v), -1)
            bad_rows = ~np.isfinite(flat).all(axis=1)
            if k == "action":
                bad_rows &= self.has_action[epi]
            if bad_rows.any():
                row = int(np.argmax(bad_rows))
                e = int(epi[row])
                raise data_error(self.source, f"non-finite value (NaN/inf) at frame {row - int(self.starts[e])}",
                                 episode=self.file_episode(e), key=k)


def frames_to_uint8(x: np.ndarray, source: str, key: str, local_ends: np.ndarray | None = None,
                    ids: list[int] | None = None) -> np.ndarray:
    """Camera frames `(N, H, W, 3)` as uint8 0..255, refusing what a plain cast would silently spoil.

    NaN/inf pixels (cast to 0), values outside 0..255 (clipped) and float frames all within 0..1 (rounded
    to black) are a `DataError` naming `source`, `key` and, for NaN/inf, the episode (``ids[e]`` for the
    episode ending at ``local_ends[e]``) and frame."""
    if x.dtype == np.uint8:
        return x
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise data_error(source, f"pixels must be numbers, got {x.dtype}", key=key)
    if np.issubdtype(x.dtype, np.floating):
        bad = ~np.isfinite(x.reshape(len(x), -1)).all(axis=1)
        if bad.any():
            row = int(np.argmax(bad))
            ends = np.asarray([len(x)] if local_ends is None else local_ends)
            e = int(np.searchsorted(ends, row, side="right"))
            frame = row - (int(ends[e - 1]) if e else 0)
            raise data_error(source, f"non-finite value (NaN/inf) at frame {frame}",
                             episode=None if ids is None else ids[e], key=key)
    lo, hi = (float(x.min()), float(x.max())) if x.size else (0.0, 0.0)
    if lo < 0 or hi > 255:
        raise data_error(source, f"pixel values {lo}..{hi} outside 0..255", key=key)
    if np.issubdtype(x.dtype, np.floating) and 0 < hi <= 1:
        raise data_error(source, f"pixel values {lo}..{hi} look like 0..1 frames; frames are stored as 0..255 "
                         "(multiply by 255)", key=key)
    return np.rint(x).astype(np.uint8)


_SLICE = re.compile(r"^([\w./-]+)\[(-?\d*):(-?\d*)\]$")


def _parse_item(item: str) -> tuple[str, slice, bool]:
    """``"state[4:5]@sincos"`` -> ``("state", slice(4, 5), True)``."""
    sincos = item.endswith("@sincos")
    item = item[: -len("@sincos")] if sincos else item
    m = _SLICE.match(item)
    name, lo, hi = (m.group(1), m.group(2), m.group(3)) if m else (item, "", "")
    return name, slice(int(lo) if lo else None, int(hi) if hi else None), sincos


def spec_fields(spec: list[str]) -> list[str]:
    """The field names a column spec reads, in order (``["state[0:4]", "state[4:5]@sincos"]`` -> ``["state"]``)."""
    return list(dict.fromkeys(_parse_item(item)[0] for item in spec))


def field_shapes(fields: dict[str, np.ndarray], spec: list[str]) -> dict[str, list[int]]:
    """Per-frame shape of every field `spec` reads, e.g. ``{"state": [5], "keypoint": [9, 2]}``.

    A spec may slice a wider field (``["state[0:2]"]`` of PushT's 5-value state), so the shapes the
    policy was trained on are recorded beside it: an observation whose field has another width is an
    error, never silently sliced, and a batch is told from a single observation by the field's rank."""
    return {k: [int(d) for d in np.shape(fields[k])[1:]] for k in spec_fields(spec) if k in fields}


def gather_columns(fields: dict[str, np.ndarray], spec: list[str], source: str = "<memory>") -> np.ndarray:
    """Concatenate flattened per-frame fields into one `(N, D)` float32 matrix.

    `spec` entries are field names, optionally with a column slice of the flattened field and an
    ``@sincos`` suffix that replaces angles by their sine and cosine (no wrap-around jump):
    ``["state[0:4]", "state[4:5]@sincos"]`` -> `(N, 6)` for PushT (agent xy, block xy, sin, cos).
    """
    cols = []
    for item in spec:
        name, columns, sincos = _parse_item(item)
        if name not in fields:
            raise data_error(source, f"missing key (have {sorted(fields)})", key=name)
        x = np.asarray(fields[name])
        x = x.reshape(len(x), -1)
        width = x.shape[1]
        # Python slicing would clip "state[3:7]" of a 5-value state to 2 columns without a word
        if any(b is not None and not -width <= b <= width for b in (columns.start, columns.stop)) or \
                len(range(width)[columns]) == 0:
            raise data_error(source, f"column slice '{item}' selects outside the field's {width} columns "
                             "(or none)", key=name)
        x = x[:, columns].astype(np.float32)
        cols.append(np.concatenate([np.sin(x), np.cos(x)], axis=1) if sincos else x)
    return np.concatenate(cols, axis=1)
