"""Robotics data: readers/writers for replay zarr, LeRobot v2.1/v3, robomimic HDF5; windows; the built-in task."""

from apps.robotics.data.convert import FORMATS, detect_format, load_episodes, save_episodes
from apps.robotics.data.episodes import DataError, EpisodeSet, gather_columns

__all__ = ["FORMATS", "DataError", "EpisodeSet", "detect_format", "gather_columns", "load_episodes", "save_episodes"]
