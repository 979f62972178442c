"""``python -m tasks.idk --export PATH [--variant text|toy|all] [--triviaqa PATH|fixture|none]``:
write the "I don't know" dataset as JSONL and its datasheet (:mod:`tasks.idk.export`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from tasks.errors import TaskError


def main(argv: Sequence[str] | None = None) -> int:
    from tasks.idk import VARIANTS, load
    from tasks.idk.export import write

    p = argparse.ArgumentParser(prog="python -m tasks.idk", description=__doc__.split("\n\n")[0])
    p.add_argument("--export", required=True, metavar="PATH", help="the .jsonl file to write (and <stem>.datasheet.md)")
    p.add_argument("--variant", choices=(*VARIANTS, "all"), default="all")
    p.add_argument("--triviaqa", default="fixture",
                   help="answerable TriviaQA questions for the text variant: a file in the hub's format "
                        "(mandarjoshi/trivia_qa, rc.nocontext), 'fixture' (12 shipped items, default) or 'none'")
    args = p.parse_args(argv)
    try:
        trivia = None if args.triviaqa == "none" else args.triviaqa
        items = []
        for variant in (VARIANTS if args.variant == "all" else (args.variant,)):
            items += load(variant, triviaqa=trivia if variant == "text" else None)
        path, sheet = write(items, args.export)
    except TaskError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {len(items)} items to {path} and the datasheet {sheet}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
