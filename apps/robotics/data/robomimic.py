"""robomimic / RoboCasa HDF5: ``data/demo_i/{actions, states, obs/<key>, next_obs/<key>}``.

Mapping to `EpisodeSet`: ``actions`` <-> ``action``; ``obs/<image_key>`` (HWC uint8) <-> ``image``;
``obs/<k>`` for the state keys are concatenated into ``state`` (and also kept under their own
names); other ``obs/<k>`` keep their names. A demo without ``actions`` is video-only. Demos are read in
natural order (demo_2 before demo_10) or from the filter key ``mask/<name>``.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np

from apps.robotics.data.episodes import EpisodeSet, data_error, frames_to_uint8


def _demo_order(names) -> list[str]:
    def key(n: str):
        m = re.search(r"(\d+)$", n)
        return (int(m.group(1)) if m else -1, n)

    return sorted(names, key=key)


def _json_attr(group, name: str, path: Path):
    """A JSON-valued HDF5 attribute; bad JSON is a `DataError` naming the file and the attribute."""
    try:
        return json.loads(group.attrs[name])
    except (ValueError, TypeError) as exc:
        raise data_error(str(path), f"invalid JSON ({exc})", key=f"data.attrs['{name}']") from exc


def _file_key(name: str, image_key: str | None) -> str:
    """The HDF5 name of an in-memory field of one demo (for error messages)."""
    return {"action": "actions", "state": "obs (state keys)"}.get(name, f"obs/{image_key if name == 'image' else name}")


def read_robomimic(path: str | os.PathLike, image_key: str | None = None, state_keys: list[str] | None = None,
                   filter_key: str | None = None, fps: float = 20.0) -> EpisodeSet:
    """Read a robomimic HDF5 file.

    Args:
        image_key: obs key used as ``image`` (default: the first key ending in ``_image``).
        state_keys: obs keys concatenated into ``state`` (default: every non-image obs key, sorted;
            a dataset ``states`` is used when the demos have no low-dimensional obs).
        filter_key: read only the demos listed in ``mask/<filter_key>``.
    """
    import h5py

    path = Path(path)
    if not path.exists():
        raise data_error(str(path), "file not found")
    if path.is_dir():
        raise data_error(str(path), "is a folder, not a robomimic HDF5 file")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise data_error(str(path), f"not an HDF5 file ({exc})") from exc
    with f:
        if "data" not in f:
            raise data_error(str(path), "missing group", key="data")
        names = _demo_order(list(f["data"].keys()))
        if filter_key is not None:
            if f"mask/{filter_key}" not in f:
                raise data_error(str(path), "filter key not found", key=f"mask/{filter_key}")
            names = _demo_order([n.decode() if isinstance(n, bytes) else str(n) for n in f[f"mask/{filter_key}"][:]])
        if not names:
            raise data_error(str(path), "no demos", key="data")
        first = f["data"][names[0]]
        obs_keys = sorted(first["obs"].keys()) if "obs" in first else []
        images = [k for k in obs_keys if f["data"][names[0]]["obs"][k].ndim == 4]
        if image_key is None and images:
            image_key = images[0]
        if state_keys is None and "dualsci_state_keys" in f["data"].attrs:
            state_keys = _json_attr(f["data"], "dualsci_state_keys", path)
            missing = [k for k in state_keys if k not in obs_keys] if isinstance(state_keys, list) else state_keys
            if missing:
                raise data_error(str(path), f"names observations the demos do not have: {missing} (have {obs_keys})",
                                 key="data.attrs['dualsci_state_keys']")
        if state_keys is None:
            state_keys = [k for k in obs_keys if k not in images]
        fields: dict[str, list] = {}
        lengths, has_action = [], []
        for e, n in enumerate(names):
            if n not in f["data"]:
                raise data_error(str(path), "demo listed in mask but missing", episode=e, key=f"data/{n}")
            g = f["data"][n]
            T = int(g.attrs.get("num_samples", 0)) or None
            parts = {}
            if "actions" in g:
                parts["action"] = np.asarray(g["actions"][:], np.float32)
            for k in obs_keys:
                if "obs" not in g or k not in g["obs"]:
                    raise data_error(str(path), "missing observation", episode=e, key=f"data/{n}/obs/{k}")
                x = np.asarray(g["obs"][k][:])
                if k == image_key:  # float 0..1 or 16-bit frames would reach the net unscaled
                    x = frames_to_uint8(x, str(path), f"data/{n}/obs/{k}", ids=[e])
                parts["image" if k == image_key else k] = x
            if state_keys:
                parts["state"] = np.concatenate([parts[k].reshape(len(parts[k]), -1).astype(np.float32)
                                                 for k in state_keys], axis=1)
            elif "states" in g:
                parts["state"] = np.asarray(g["states"][:], np.float32)
            lens = {k: len(v) for k, v in parts.items()}
            T = T or next(iter(lens.values()))
            for k, L in lens.items():
                if L != T:
                    raise data_error(str(path), f"has {L} frames, num_samples says {T}", episode=e,
                                     key=f"data/{n}/{_file_key(k, image_key)}")
            lengths.append(T)
            has_action.append("action" in parts)
            for k, v in parts.items():
                first = fields.setdefault(k, [v])[0]
                if first is not v and v.shape[1:] != first.shape[1:]:  # concatenation would fail unnamed
                    raise data_error(str(path), f"per-frame shape {v.shape[1:]} differs from {first.shape[1:]} in "
                                     f"{names[0]}", episode=e, key=f"data/{n}/{_file_key(k, image_key)}")
                if first is not v:
                    fields[k].append(v)
        if any(has_action) and not all(has_action):
            ref = next(v for v, h in zip(fields["action"], has_action) if h)
            acts, it = [], iter(fields["action"])
            for T, h in zip(lengths, has_action):
                acts.append(next(it) if h else np.zeros((T,) + ref.shape[1:], np.float32))
            fields["action"] = acts
        env_args = f["data"].attrs.get("env_args")
        meta = {"env_args": _json_attr(f["data"], "env_args", path) if isinstance(env_args, (str, bytes)) else None,
                "demo_names": names, "state_keys": state_keys, "image_key": image_key}
    out = {k: np.concatenate(v) for k, v in fields.items()}
    return EpisodeSet(out, np.cumsum(lengths), np.array(has_action), fps=fps, source=str(path), meta=meta)


def write_robomimic(eps: EpisodeSet, path: str | os.PathLike, image_key: str = "agentview_image",
                    overwrite: bool = False, next_obs: bool = True) -> Path:
    """Write `eps` as robomimic HDF5 (atomically). ``image`` -> ``obs/<image_key>``, ``state`` ->
    ``states`` and ``obs/state``, others -> ``obs/<name>``; ``next_obs`` is the obs shifted by one
    (last frame repeated; ``next_obs=False`` leaves it out, halving the file); video-only episodes get
    no ``actions``; ``mask/train`` lists all demos."""
    import h5py

    from dualsci.io import atomic_write

    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path}: output file already exists (refusing to overwrite)")
    eps.check_camera_frames()
    # h5py reads back what it writes: the temporary file must be opened read-write.
    with atomic_write(path, "w+b") as fh:
        with h5py.File(fh, "w") as f:
            data = f.create_group("data")
            data.attrs["total"] = eps.n_frames
            if "state" in eps.fields:
                data.attrs["dualsci_state_keys"] = json.dumps(["state"])
            data.attrs["env_args"] = json.dumps(eps.meta.get("env_args") or
                                                {"env_name": "dualsci", "env_type": 0, "env_kwargs": {}})
            names = []
            for e in range(eps.n_episodes):
                ep = eps.episode(e)
                n = f"demo_{e}"
                names.append(n)
                g = data.create_group(n)
                T = int(eps.lengths[e])
                g.attrs["num_samples"] = T
                if eps.has_action[e] and "action" in ep:
                    g.create_dataset("actions", data=ep["action"].astype(np.float32))
                g.create_dataset("rewards", data=np.zeros(T, np.float32))
                dones = np.zeros(T, np.int64)
                dones[-1] = 1
                g.create_dataset("dones", data=dones)
                if "state" in ep:
                    g.create_dataset("states", data=ep["state"].astype(np.float32))
                for k, v in ep.items():
                    if k == "action":
                        continue
                    name = image_key if k == "image" else k
                    g.create_dataset(f"obs/{name}", data=v, compression="gzip" if v.ndim == 4 else None)
                    if next_obs:
                        g.create_dataset(f"next_obs/{name}", data=np.concatenate([v[1:], v[-1:]]),
                                         compression="gzip" if v.ndim == 4 else None)
            f.create_dataset("mask/train", data=np.array(names, dtype="S"))
    return path
