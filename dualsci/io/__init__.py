"""Safe file output shared by every app: atomic files and folders, checksums, resumable manifests."""

from dualsci.io.atomic import (
    atomic_dir, atomic_write, blocking_file, is_atomic_temporary, output_dir_problem, sha256_file, write_json_atomic,
)
from dualsci.io.manifest import JsonlManifest
from dualsci.io.paths import shared_data_dir
from dualsci.io.index import write_index_html

__all__ = [
    "atomic_dir",
    "atomic_write",
    "blocking_file",
    "is_atomic_temporary",
    "output_dir_problem",
    "sha256_file",
    "write_json_atomic",
    "JsonlManifest",
    "shared_data_dir",
    "write_index_html",
]
