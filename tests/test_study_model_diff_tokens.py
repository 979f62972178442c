"""studies.model_diff's token_shift and adl parts on tiny random pairs saved to disk."""

import argparse
import copy
import json

import pandas as pd
import pytest
import torch

import interp
from interp.diff import token_shift as ts
from studies._common import StudyError
from studies.model_diff import adl as adl_part, token_shift as shift_part
from tests.conftest import PROMPTS, build_tokenizer, random_model
from tests.test_diff_tokens import offset_models


def _args(*argv):
    parser = argparse.ArgumentParser()
    shift_part.add_arguments(parser)
    adl_part.add_arguments(parser)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--lens", default="logit")
    return parser.parse_args(list(argv))


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


def test_token_shift_part_writes_the_librarys_rows_and_resumes(random_pair, prompt_file, tmp_path):
    args = _args("--shift-prompts", str(prompt_file), "--shift-max-new-tokens", "4", "--shift-chat-template", "off",
                 "--shift-block", "2")
    result = shift_part.run_part(random_pair, args, tmp_path)
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
    assert result["n_rows"] == len(expect) and result["n_prompts"] == len(PROMPTS)
    assert {"token_shift_positions.csv", "token_shift_tokens.csv", "token_shift_positions.png"} <= set(result["outputs"])
    lines = (tmp_path / "token_shift" / "results.jsonl").read_text().count("\n")
    shift_part.run_part(random_pair, args, tmp_path)  # resumed: nothing recomputed
    assert (tmp_path / "token_shift" / "results.jsonl").read_text().count("\n") == lines
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
        shift_part.run_part(random_pair, _args("--shift-prompts", str(path)), tmp_path)


def test_token_shift_part_bad_options(random_pair, prompt_file, tmp_path):
    with pytest.raises(StudyError, match="choose from greedy, sample"):
        shift_part.run_part(random_pair, _args("--shift-prompts", str(prompt_file), "--shift-modes", "beam"), tmp_path)
    with pytest.raises(StudyError, match="--shift-max-new-tokens must be >= 1"):
        shift_part.run_part(random_pair, _args("--shift-prompts", str(prompt_file), "--shift-max-new-tokens", "0"),
                            tmp_path)


def test_adl_part_recovers_the_offset_and_steers(tmp_path, prompt_file):
    base, chat, v = offset_models(layer=1)
    config = base.config
    pair = interp.load_pair(base=_save(base, tmp_path / "base"), chat=_save(chat, tmp_path / "chat"))
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(PROMPTS + ["the"]) + "\n")  # "the" is too short for skip 1 + k 3
    out = tmp_path / "run"
    out.mkdir()
    args = _args("--adl-texts", str(texts), "--adl-k", "3", "--adl-targets", "sorry cannot help",
                 "--adl-steer-layers", "1", "--adl-scales", "1", "--shift-prompts", str(prompt_file),
                 "--adl-max-new-tokens", "3")
    result = adl_part.run_part(pair, args, out)
    assert (result["n_texts"], result["n_dropped"]) == (len(PROMPTS), 1)
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
    again = adl_part.run_part(pair, args, out)  # the saved means are reused
    assert pd.read_csv(out / "adl_tokens.csv", keep_default_na=False).equals(tokens) and again["n_texts"] == result["n_texts"]
