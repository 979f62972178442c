"""studies.model_diff's token_shift and adl parts on tiny random pairs saved to disk."""

import copy
import json
from functools import partial

import pandas as pd
import pytest
import torch

import interp
from interp.diff import token_shift as ts
from studies._common import StudyError
from studies.model_diff import parse_args, run_study
from study_cli import rows_of, run_study_cli
from tests.conftest import PROMPTS, build_tokenizer, random_model
from tests.test_diff_tokens import offset_models


cli = partial(run_study_cli, "studies.model_diff")


def _paths(pair):
    return ("--base", pair.spec.source("base"), "--chat", pair.spec.source("chat"))


def _run(pair, out, *argv):
    """The study in this process (its StudyErrors raised, not printed)."""
    return run_study(parse_args([*_paths(pair), "--out", str(out), "--no-figures", *argv]))


def _save(model, folder):
    build_tokenizer(folder)
    model.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def random_pair(tmp_path_factory):
    base = random_model("llama", seed=0)
    chat = copy.deepcopy(base)
    with torch.no_grad():
        for p in chat.parameters():
            p.add_(0.5 * p.std() * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    root = tmp_path_factory.mktemp("pair")
    return interp.load_pair(base=_save(base, root / "base"), chat=_save(chat, root / "chat"))


@pytest.fixture(scope="module")
def prompt_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("prompts") / "prompts.jsonl"
    path.write_text("".join(json.dumps({"id": f"p{i}", "kind": "plain" if i % 2 else "harmful", "prompt": p}) + "\n"
                            for i, p in enumerate(PROMPTS)))
    return path


SHIFT = ("--shift-max-new-tokens", "4", "--shift-chat-template", "off", "--shift-block", "2")


def test_token_shift_part_writes_the_librarys_rows_and_resumes(random_pair, prompt_file, tmp_path):
    cli(*_paths(random_pair), "--parts", "token_shift", "--shift-prompts", str(prompt_file), *SHIFT,
        "--out", str(tmp_path))
    table = pd.read_csv(tmp_path / "token_shift.csv", keep_default_na=False)
    assert {"prompt_id", "prompt_kind", "position", "token", "base_rank", "shift_class", "kl"} <= set(table.columns)
    assert set(table["prompt_kind"]) == {"plain", "harmful"} and set(table["mode"]) == {"greedy", "sample"}
    # the same numbers as the library on the loaded models (blocks of 2 prompts change nothing)
    chat, base = random_pair.load("chat"), random_pair.load("base")
    responses = ts.chat_responses(chat, list(PROMPTS), [f"p{i}" for i in range(len(PROMPTS))],
                                  ["plain" if i % 2 else "harmful" for i in range(len(PROMPTS))], max_new_tokens=4,
                                  modes=("greedy", "sample"), seed=0)
    expect = pd.DataFrame(ts.score_shift(base, responses)).sort_values(["mode", "prompt_kind", "prompt_id", "position"])
    assert table["base_rank"].tolist() == expect["base_rank"].tolist()
    assert table["kl"].tolist() == pytest.approx(expect["kl"].tolist(), rel=1e-4, abs=1e-6)
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["rows_by_part"] == {"token_shift": len(expect)}
    assert {"token_shift_positions.csv", "token_shift_tokens.csv", "token_shift_positions.png"} <= set(meta["outputs"])
    summary = pd.read_csv(tmp_path / "summary.csv")
    shifted = summary[(summary["part"] == "token_shift") & (summary["metric"] == "frac_shifted")]
    greedy = expect[(expect["mode"] == "greedy") & (expect["prompt_kind"] == "harmful")]
    assert shifted.set_index("group").loc["greedy/harmful", "value"] == pytest.approx(
        float((greedy["shift_class"] == "shifted").mean()), abs=1e-6)
    log = (tmp_path / "results.jsonl").read_text()
    cli(*_paths(random_pair), "--parts", "token_shift", "--shift-prompts", str(prompt_file), *SHIFT,
        "--out", str(tmp_path))  # resumed: nothing recomputed
    assert (tmp_path / "results.jsonl").read_text() == log
    assert pd.read_csv(tmp_path / "token_shift.csv", keep_default_na=False).equals(table)


@pytest.mark.parametrize("content, message", [
    (None, "no file"), ("", "no prompts"), ('{"id": 1}\n', "no non-empty 'prompt'"), ("not json\n", "not JSON"),
    ('{"id": 1, "prompt": "a"}\n{"id": 1, "prompt": "b"}\n', "ids repeat"),
])
def test_token_shift_part_bad_prompt_files(random_pair, tmp_path, content, message):
    path = tmp_path / "p.jsonl"
    if content is not None:
        path.write_text(content)
    with pytest.raises(StudyError, match=message):
        _run(random_pair, tmp_path / "run", "--parts", "token_shift", "--shift-prompts", str(path))


def test_token_shift_part_bad_options(random_pair, prompt_file, tmp_path):
    with pytest.raises(StudyError, match="choose from greedy, sample"):
        _run(random_pair, tmp_path / "a", "--parts", "token_shift", "--shift-prompts", str(prompt_file),
             "--shift-modes", "beam")
    with pytest.raises(StudyError, match="--shift-max-new-tokens must be >= 1"):
        _run(random_pair, tmp_path / "b", "--parts", "token_shift", "--shift-prompts", str(prompt_file),
             "--shift-max-new-tokens", "0")


def test_adl_part_recovers_the_offset_and_steers(tmp_path, prompt_file):
    base, chat, v = offset_models(layer=1)
    config = base.config
    pair = interp.load_pair(base=_save(base, tmp_path / "base"), chat=_save(chat, tmp_path / "chat"))
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(PROMPTS + ["the"]) + "\n")  # "the" is too short for skip 1 + k 3
    out = tmp_path / "run"
    argv = ("--parts", "adl", "--adl-texts", str(texts), "--adl-k", "3", "--adl-targets", "sorry cannot help",
            "--adl-steer-layers", "1", "--adl-scales", "1", "--shift-prompts", str(prompt_file),
            "--adl-max-new-tokens", "3", "--out", str(out))
    cli(*_paths(pair), *argv)
    assert f"{len(PROMPTS)} neutral texts (1 too short, dropped)" in (out / "adl_tokens.md").read_text()
    tokens = pd.read_csv(out / "adl_tokens.csv", keep_default_na=False)
    norms = tokens.groupby("layer")["norm"].first()
    assert norms[1] == pytest.approx(float(v.norm()), rel=1e-5) and norms[0] < 1e-5
    assert set(tokens["lens_model"]) == {"base", "chat"}
    targets = pd.read_csv(out / "adl_targets.csv", keep_default_na=False)
    assert len(targets) == 2 * 3 * config.num_hidden_layers and targets["rank"].between(1, config.vocab_size).all()
    steering = pd.read_csv(out / "adl_steering.csv", keep_default_na=False)
    # base + v at block 1's resid_post is chat: steered base answers as chat does unsteered
    base_rows = steering[steering["model"] == "base"].set_index("prompt_id")
    chat_rows = steering[steering["model"] == "chat"].set_index("prompt_id")
    assert base_rows["after"].tolist() == chat_rows["before"].tolist()
    log = (out / "results.jsonl").read_text()
    cli(*_paths(pair), *argv)  # resumed: the part is done
    assert (out / "results.jsonl").read_text() == log
    assert pd.read_csv(out / "adl_tokens.csv", keep_default_na=False).equals(tokens)
    (out / "results.jsonl").unlink()  # rows lost after the means were saved: the rerun gives the same tables
    (out / "fingerprint.json").unlink()
    cli(*_paths(pair), *argv)
    assert pd.read_csv(out / "adl_tokens.csv", keep_default_na=False).equals(tokens)


def test_cli_token_shift_and_adl_resume_refuse_summarise_overwrite(random_pair, prompt_file, tmp_path):
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(PROMPTS) + "\n")
    out = tmp_path / "run"
    argv = (*_paths(random_pair), "--parts", "token_shift,adl", "--shift-prompts", str(prompt_file), *SHIFT,
            "--adl-texts", str(texts), "--adl-k", "2", "--adl-steer-prompts", "1", "--adl-max-new-tokens", "2",
            "--adl-targets", "sorry", "--no-figures", "--out", str(out))
    proc = cli(*argv)
    assert "token shift greedy/harmful" in proc.stdout and "adl through chat's lens" in proc.stdout
    names = ("token_shift.csv", "token_shift_positions.csv", "token_shift_tokens.csv", "adl_tokens.csv",
             "adl_targets.csv", "adl_steering.csv", "adl_tokens.md", "summary.csv")
    first = {n: (out / n).read_text() for n in names}
    assert set(pd.read_csv(out / "summary.csv")["part"]) == {"token_shift", "adl"}
    assert {r["part"] for r in rows_of(out)} == {"token_shift", "adl"} and (out / "adl" / "mean_base.pt").is_file()
    log = (out / "results.jsonl").read_text()
    cli(*argv)  # resumed: no row recomputed, the same tables
    assert (out / "results.jsonl").read_text() == log
    assert {n: (out / n).read_text() for n in names} == first
    # the parts' options are in the fingerprint: another --shift-limit (or --adl-k) into the folder is refused
    for option in (("--shift-limit", "1"), ("--adl-k", "3")):
        proc = cli(*argv, *option, check=False)
        assert proc.returncode == 2 and f"{option[0][2:]}" in proc.stderr and "--overwrite" in proc.stderr, proc.stderr
    for n in names:
        (out / n).unlink()
    cli(*argv, "--summary-only")  # the tables come back from the rows alone
    assert {n: (out / n).read_text() for n in names} == first
    cli(*argv[:-2], "--shift-limit", "1", "--parts", "token_shift", "--overwrite", "--out", str(out))
    assert not (out / "adl").exists() and not (out / "adl_tokens.csv").exists()
    assert {r["part"] for r in rows_of(out)} == {"token_shift"}
    assert len({r["prompt_id"] for r in rows_of(out)}) == 2  # one prompt per kind


def test_token_shift_shards_by_block_and_merges_to_the_whole_run(random_pair, prompt_file, tmp_path, capsys):
    argv = ("--parts", "token_shift", "--shift-prompts", str(prompt_file), *SHIFT)  # 3 prompts: blocks of 2 and 1
    _run(random_pair, tmp_path / "whole", *argv)
    shards = tmp_path / "shards"
    for i in (1, 2):
        _run(random_pair, shards, *argv, "--shard", f"{i}/2")
        assert not (shards / "summary.csv").exists()
    assert "token shift blocks 2-2 of 2" in capsys.readouterr().out
    by_shard = [{r["prompt_id"] for r in rows_of_file(shards / f"results.shard-{i}-of-2.jsonl")} for i in (1, 2)]
    assert by_shard == [{"p0", "p2"}, {"p1"}]  # prompts in kind order: harmful p0, p2, then plain p1
    _run(random_pair, shards, *argv, "--summary-only")
    for name in ("token_shift.csv", "token_shift_positions.csv", "token_shift_tokens.csv", "summary.csv"):
        assert (shards / name).read_text() == (tmp_path / "whole" / name).read_text(), name
    # the parts that reduce over everything refuse --shard, saying which part does shard and how
    with pytest.raises(StudyError, match=r"only token_shift shards \(by blocks of --shift-block prompts\), not "
                                         r"weights, activations \(.*run --parts token_shift --shard i/n, and the "
                                         r"other parts whole"):
        _run(random_pair, tmp_path / "refused", "--parts", "weights,activations,token_shift", "--shard", "1/2")


def rows_of_file(path):
    return [json.loads(line) for line in path.read_text().splitlines()]
