"""``python -m studies.merge_shards DEST SRC [SRC ...]``: gather shards run in several folders.

Shards that wrote into one shared folder need no merging: the study's own command with
``--summary-only`` reads every ``results*.jsonl`` there. Shards run in separate folders (other
machines, node-local scratch) are gathered by copying each shard's two files,
``results.shard-i-of-n.jsonl`` and ``fingerprint.shard-i-of-n.json``, into ``DEST``; this
command does that, refusing (one ``error:`` line, exit 2) a shard whose fingerprint differs from
the others' (other options, models or versions: its rows would not belong to the same run), and
a file already in ``DEST`` with other contents. Then run the study with ``--summary-only --out
DEST`` and the options of the run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from studies._common import StudyError, run_cli
from studies._identity import _differences


def shard_files(folder: Path) -> list[tuple[Path, Path]]:
    """``(results, fingerprint)`` of each shard in ``folder``; StudyError if a results file has no fingerprint."""
    pairs = []
    for results in sorted(folder.glob("results*.shard-*-of-*.jsonl")):
        fingerprint = results.with_name("fingerprint" + results.name[len("results"):-len(".jsonl")] + ".json")
        if not fingerprint.is_file():
            raise StudyError(f"{results} has no {fingerprint.name} beside it: copy both files of every shard")
        pairs.append((results, fingerprint))
    return pairs


def merge(dest: Path, sources: list[Path]) -> list[Path]:
    """Copy every shard of ``sources`` into ``dest`` (created); returns the files copied."""
    found = []
    for src in sources:
        if not src.is_dir():
            raise StudyError(f"no folder {str(src)!r}")
        pairs = shard_files(src)
        if not pairs:
            raise StudyError(f"{src} holds no shard files (results.shard-i-of-n.jsonl); was it run with --shard i/n?")
        found += pairs
    existing = shard_files(dest) if dest.is_dir() else []
    first = None
    for _, fingerprint in existing + found:
        record = json.loads(fingerprint.read_text(encoding="utf-8"))
        if first is None:
            first = (fingerprint, record)
        elif (record.get("study"), record.get("fingerprint")) != (first[1].get("study"), first[1].get("fingerprint")):
            what = ", ".join(_differences(first[1].get("fingerprint", {}), record.get("fingerprint", {})))
            raise StudyError(f"{fingerprint} is not a shard of the run of {first[0]} (study {record.get('study')!r} vs "
                             f"{first[1].get('study')!r}; {what}); run every shard with the same options")
    dest.mkdir(parents=True, exist_ok=True)
    copied = []
    for pair in found:
        for path in pair:
            target = dest / path.name
            if target.exists():
                if target.resolve() == path.resolve() or target.read_bytes() == path.read_bytes():
                    continue
                raise StudyError(f"{target} exists with other contents than {path}; remove one of them")
            shutil.copy2(path, target)
            copied.append(target)
    return copied


def parse(argv=None):
    p = argparse.ArgumentParser(prog="python -m studies.merge_shards", description=__doc__.split("\n\n")[0])
    p.add_argument("dest", type=Path, help="the folder to gather the shards in (then --summary-only --out DEST)")
    p.add_argument("sources", type=Path, nargs="+", help="folders a shard (or several) wrote")
    return p.parse_args(argv)


def main(args) -> int:
    copied = merge(args.dest, list(args.sources))
    study = {json.loads(f.read_text())["study"] for _, f in shard_files(args.dest)}
    print(f"copied {len(copied)} files into {args.dest}; now run `python -m studies.{study.pop()} ... --summary-only "
          f"--out {args.dest}` with the options of the run")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(parse, main))
