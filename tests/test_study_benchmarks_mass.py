"""The benchmark study's probability-mass tables, unmapped generations and ``--demos-from``,
end to end on the toy pair, against the rows and a hand softmax of the HF model."""

import json
from functools import partial

import numpy as np
import pandas as pd
import pytest
import torch
import transformers
from study_cli import rows_of, run_study_cli

import interp
from tasks.benchmarks import TASKS, toy_capitals

cli = partial(run_study_cli, "studies.benchmarks")
ARGS = ["--tasks", "toy_capitals,copa", "--limit", "5", "--layers", "none", "--generate", "3",
        "--max-new-tokens", "3", "--no-figures"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("mass")
    return out, cli(*ARGS, "--out", str(out))


def test_option_mass_equals_a_hand_softmax(run):
    out, _ = run
    rows = [r for r in rows_of(out) if r["shots"] == 0]
    items = {it.id: it for it in toy_capitals.load(data="fixture", limit=5) + TASKS["copa"](data="fixture", limit=5)}
    for member in ("base", "chat"):
        source = interp.PAIRS["toy"].source(member)
        model = transformers.AutoModelForCausalLM.from_pretrained(source).eval()
        tok = transformers.AutoTokenizer.from_pretrained(source)
        for r in (r for r in rows if r["model"] == member):
            item = items[r["item"]]
            ids = tok(item.context)["input_ids"]
            with torch.no_grad():
                p = model(input_ids=torch.tensor([ids])).logits[0, -1].double().softmax(-1)
            firsts = {tok(item.context + o)["input_ids"][len(ids)] for o in item.options}
            assert r["option_mass"] == pytest.approx(float(p[list(firsts)].sum()), abs=1e-5)
            p[list(firsts)] = 0
            top = p.topk(len(r["top_other"]))
            assert [t for t, _ in r["top_other"]] == [tok.decode([int(i)]) for i in top.indices]
    table = pd.read_csv(out / "answer_mass.csv").set_index(["model", "task"])
    for (model, task), g in pd.DataFrame(rows).groupby(["model", "task"]):
        assert table.loc[(model, task), "option_mass"] == pytest.approx(g["option_mass"].mean(), abs=1e-6)
        assert table.loc[(model, task), "n"] == len(g)
    assert table.loc[("base", "toy_capitals"), "option_mass"] > 0.5 > table.loc[("base", "copa"), "option_mass"]
    diff = pd.read_csv(out / "answer_mass_comparison.csv").set_index("task")
    for task in ("toy_capitals", "copa"):
        wide = pd.DataFrame(rows)[lambda d: d.task == task].pivot(index="item", columns="model", values="option_mass")
        assert diff.loc[task, "diff"] == pytest.approx((wide.chat - wide.base).mean(), abs=1e-6)


def test_generations_say_whether_they_mapped_and_the_share_is_printed(run):
    out, proc = run
    gens = pd.read_csv(out / "generations.csv", keep_default_na=False)
    assert len(gens) == 2 * 2 * 3
    assert (gens["mapped"] == (gens["generated_option"] != "")).all()
    for model, g in gens.groupby("model"):
        assert f"{model}: {int((~g.mapped).sum())}/{len(g)}" in proc.stdout


def test_demos_from_other_tasks_are_recorded_and_fed(tmp_path):
    cli(*ARGS, "--demos-from", "toy_capitals=1", "--demos-from", "copa:effect=1", "--out", str(tmp_path))
    rows = rows_of(tmp_path)
    assert {r["shots"] for r in rows} == {2}
    items = {it.id: it for it in toy_capitals.load(data="fixture", limit=5) + TASKS["copa"](data="fixture", limit=5)}
    for r in rows:
        assert r["demos_from"] == ["toy_capitals=1", "copa:effect=1"] and len(r["demos"]) == 2
        assert r["item"] not in r["demos"]
        kinds = sorted(d.split("-")[0] for d in r["demos"])
        assert kinds == ["copa", "toy_capitals"]
        assert items[next(d for d in r["demos"] if d.startswith("copa"))].category == "effect"
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["options"]["demos_from"] == ["toy_capitals=1", "copa:effect=1"]
    # another composition is another run: resuming into the same folder is refused
    proc = cli(*ARGS, "--demos-from", "toy_capitals=2", "--out", str(tmp_path), check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


@pytest.mark.parametrize("args, message", [
    (["--demos-from", "copa"], "TASK[:CATEGORY]=COUNT"),
    (["--demos-from", "copa:nope=1"], "no category 'nope'"),
    (["--demos-from", "copa=1", "--shots", "3"], "--shots must be 1"),
])
def test_bad_demos_from_exits_2_naming_the_problem(tmp_path, args, message):
    proc = cli("--tasks", "copa", "--limit", "4", "--no-figures", *args, "--out", str(tmp_path), check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert message in proc.stderr
