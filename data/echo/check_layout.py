"""Report what the echo readers see in a local CAMUS (2019/2023) or EchoNet-Dynamic copy.

    python data/echo/check_layout.py ROOT [--decode]

Exit status 2 with the reader's message (file + problem) at the first bad file.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("root")
    p.add_argument("--decode", action="store_true", help="EchoNet: decode every video to check traced frames")
    args = p.parse_args(argv)
    from apps.echo import camus, echonet

    root = Path(args.root)
    try:
        if (root / "FileList.csv").exists():
            videos = echonet.scan(root, check_frames=args.decode)
            print(f"EchoNet-Dynamic: {len(videos)} videos with ≥ 2 traced frames; splits {dict(Counter(v.split for v in videos))}")
            _, dups = echonet.read_tracings(root)
            print(f"duplicate tracing blocks dropped: {dups}")
        else:
            release = camus.detect_release(root)
            samples = camus.scan(root, require_gt=False)
            patients = sorted({s.patient for s in samples})
            print(f"CAMUS {release}: {len(patients)} patients, {len(samples)} ED/ES images "
                  f"({sum(s.gt is not None for s in samples)} with _gt)")
            print("quality:", dict(Counter(s.info.get("ImageQuality") for s in samples if s.view == "4CH" and s.phase == "ED")))
            split = camus.official_split(root)
            print("split:", {k: len(v) for k, v in split.items()},
                  "(files)" if (root / "database_split").is_dir() else "(documented rule: no split files found)")
            for s in samples[:4]:
                camus.load_sample(s)
    except (camus.CamusError, echonet.EchoNetError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
