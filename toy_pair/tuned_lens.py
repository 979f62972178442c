"""Train the toy pair's tuned lenses and ship them under ``models/toy/tuned_lens/{base,chat}``.

    python -m toy_pair.tuned_lens [--out models/toy/tuned_lens] [--steps 300]

Training text is the pretraining corpus (``tasks.toy_world.corpus.Corpus``, seed
``TRAIN_SEED``); the held-out text (:func:`heldout_texts`, what the tests measure KL on) comes
from another seed with every document that also appears in the training text removed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tasks.toy_world.corpus import Corpus

from .common import set_determinism

TRAIN_SEED, HELDOUT_SEED = 0, 1
N_TRAIN, N_HELDOUT = 2000, 64
OUT = Path(__file__).resolve().parent.parent / "models" / "toy" / "tuned_lens"
MEMBERS = ("base", "chat")


def train_texts() -> list[str]:
    corpus = Corpus(TRAIN_SEED)
    return [corpus.document() for _ in range(N_TRAIN)]


def heldout_texts(n: int = N_HELDOUT) -> list[str]:
    """``n`` corpus documents none of which is in :func:`train_texts`."""
    seen, corpus, out = set(train_texts()), Corpus(HELDOUT_SEED), []
    while len(out) < n:
        doc = corpus.document()
        if doc not in seen:
            out.append(doc)
    return out


def main(argv: list[str] | None = None) -> None:
    import interp
    from interp.lens import train_tuned_lens

    parser = argparse.ArgumentParser(prog="python -m toy_pair.tuned_lens", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT, help="folder for base/ and chat/ (default: the shipped one)")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    set_determinism(args.seed)
    texts = train_texts()
    for member in MEMBERS:
        lm = interp.load(f"toy/{member}")
        lens = train_tuned_lens(lm, texts, steps=args.steps, lr=args.lr, batch_size=args.batch_size,
                                seed=args.seed, progress=True)
        print(f"{member}: saved to {lens.save(args.out / member)}")


def load(lm, member: str):
    """The shipped tuned lens of toy pair member ``member`` (``"base"`` or ``"chat"``) for ``lm``."""
    from interp.errors import InterpError
    from interp.lens import TunedLens

    if member not in MEMBERS:
        raise InterpError(f"unknown toy member {member!r}; valid: {', '.join(MEMBERS)}")
    return TunedLens.load(OUT / member, lm)


if __name__ == "__main__":
    main()
