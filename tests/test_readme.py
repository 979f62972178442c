"""The README's API example runs as written on the shipped toy pair, with the shapes it claims.

No skip when the toy pair is missing: it ships with the toolkit, so its absence is a failure."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_api_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no python example"
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    lm, run = namespace["lm"], namespace["run"]
    assert run.logits.shape == (2, 1, lm.d_vocab)
    assert run.cache.stack("resid_post").shape == (lm.n_layers, 2, 1, lm.d_model)
    n_tokens = lm.to_tokens("The capital of France is")[0].shape[1]
    assert namespace["effect"].shape == (lm.n_layers, n_tokens)
    assert namespace["result"].final.top_ids.shape == (1, 5)
    assert namespace["by_layer"].top_ids.shape == (lm.n_layers, 2, 1, 5)
    assert namespace["tuned"].sha256 is not None  # loaded from the shipped files
    assert not namespace["patched"].logits.equal(lm.run(namespace["prompts"]).logits)


def _model_diff_commands(text: str) -> list[str]:
    """The README's ``python -m studies.model_diff`` command lines: in code blocks (``\\``
    continuations joined) and in inline code (those without ``[optional]`` syntax)."""
    found = []
    for block in re.findall(r"```\w*\n(.*?)```", text, flags=re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        found += [line.strip() for line in joined.splitlines() if line.strip().startswith("python -m studies.model_diff")]
    found += [c for c in re.findall(r"`(python -m studies\.model_diff[^`]*)`", text) if "[" not in c]
    return found


def test_readme_model_diff_commands_parse():
    import shlex

    from studies.model_diff import PARTS, parse_args

    commands = _model_diff_commands(README.read_text())
    assert any("--shift-prompts" in c for c in commands), "the URIAL command is gone from the README"
    for command in commands:
        args = parse_args(shlex.split(command)[3:])  # SystemExit (exit 2) on an option the study lacks
        assert set(args.parts) <= {p.name for p in PARTS}
