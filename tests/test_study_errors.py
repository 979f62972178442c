"""Every study turns bad input into one line, ``error: ...``, and exit status 2: no traceback.

Each case runs the study's CLI as a user does (``python -W error -m studies.NAME``); all of
them fail before any model runs, so each takes seconds.
"""

from __future__ import annotations

import importlib
import inspect
import json
import pkgutil

import pytest
import torch
from study_cli import REPO, run_study_cli

from interp import InterpError

STUDIES = ("ffn_capitals", "benchmarks", "calibration", "patching", "reward_collapse", "syntaxgym")
TOY_BASE, TOY_CHAT = str(REPO / "models/toy/base"), str(REPO / "models/toy/chat")


def one_error_line(proc) -> str:
    """The single ``error:`` line of a failed run (``note:`` lines before it are allowed)."""
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip() and not line.startswith("note:")]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
    return lines[0]


def fail(study: str, *args: str, tmp_path) -> str:
    return one_error_line(run_study_cli(f"studies.{study}", *args, "--out", str(tmp_path / "out"), check=False))


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """An empty folder and one holding only the toy tokenizer (no config, no weights)."""
    root = tmp_path_factory.mktemp("no_model")
    (root / "empty").mkdir()
    (root / "tokenizer_only").mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (root / "tokenizer_only" / name).write_bytes((REPO / "models/toy/base" / name).read_bytes())
    return root


@pytest.mark.parametrize("study", STUDIES)
def test_unavailable_devices(study, tmp_path):
    missing = f"cuda:{torch.cuda.device_count()}"  # one past the last GPU: absent on every machine
    line = fail(study, "--pair", "toy", "--limit", "2", "--device", missing, tmp_path=tmp_path)
    assert f"device '{missing}' is not available on this machine; valid here: cpu" in line
    line = fail(study, "--pair", "toy", "--limit", "2", "--device", "meta", tmp_path=tmp_path)
    assert "'meta' holds no weights" in line and "valid here: cpu" in line
    assert not (tmp_path / "out" / "results.jsonl").exists()


@pytest.mark.parametrize("study", STUDIES)
def test_folders_without_a_model(study, folders, tmp_path):
    line = fail(study, "--base", str(folders / "empty"), "--chat", TOY_CHAT, "--limit", "2", tmp_path=tmp_path)
    assert f"no model in '{folders / 'empty'}': expected config.json and *.safetensors/*.bin (found: nothing" in line
    # The chat member is checked before the base member's work (and before its tokenizer is read).
    line = fail(study, "--base", TOY_BASE, "--chat", str(folders / "tokenizer_only"), "--limit", "2", tmp_path=tmp_path)
    assert "no model in" in line and "(found: tokenizer.json, tokenizer_config.json)" in line
    assert not (tmp_path / "out" / "results.jsonl").exists()


@pytest.mark.parametrize("study", ["benchmarks", "calibration"])
def test_data_file_with_a_non_string_field(study, tmp_path):
    path = tmp_path / "boolq.jsonl"
    path.write_text(json.dumps({"question": "is it raining", "passage": "It rains.", "label": True}) + "\n"
                    + json.dumps({"question": 5, "passage": "It rains.", "label": False}) + "\n")
    line = fail(study, "--pair", "toy", "--tasks", "boolq", "--data", f"boolq={path}", tmp_path=tmp_path)
    assert line == f"error: task 'boolq', {path} line 2: field 'question' must be a string, got int 5"


def test_facts_file_with_non_string_values(tmp_path):
    path = tmp_path / "facts.jsonl"
    path.write_text(json.dumps({"subject": "Poland", "answer": "Warsaw"}) + "\n"
                    + json.dumps({"subject": "Spain", "answer": ["Madrid"]}) + "\n")
    line = fail("ffn_capitals", "--pair", "toy", "--facts", str(path), tmp_path=tmp_path)
    assert line == f"error: --facts {path}:2: record 2: field 'answer' must be a string, got list ['Madrid']"


def test_library_errors_inside_a_study_become_one_line(capsys):
    from probes.chat import chat_prompt
    from studies._common import run_cli

    class NoTemplate:
        chat_template = None

    def study(args):
        chat_prompt(NoTemplate(), "hello")

    assert run_cli(lambda argv: None, study, []) == 2
    assert capsys.readouterr().err == "error: the tokenizer has no chat template; use --chat-template off\n"


def _error_classes(package: str):
    root = importlib.import_module(package)
    for info in pkgutil.walk_packages(root.__path__, f"{package}."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == info.name:
                yield f"{info.name}.{name}", obj


def test_every_error_class_outside_interp_is_an_interp_error():
    found = dict(kv for package in ("probes", "tasks", "studies") for kv in _error_classes(package))
    assert {"probes.chat.NoChatTemplate", "tasks.errors.TaskError", "studies._common.StudyError"} <= set(found)
    assert [name for name, cls in found.items() if not issubclass(cls, InterpError)] == []
