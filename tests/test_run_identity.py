"""A run folder holds the rows of one run: what decides a row is fingerprinted, a resumed run
must match it, and anything else stops with an error naming what differs (issue 10).

Also the model identity the fingerprint uses (``interp.identity``): a local folder's changes to
config or weights change it, copying or touching it does not; a hub id resolves to a commit."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

import interp
from studies import _common, _identity, benchmarks, calibration, patching, syntaxgym
from studies import ffn_capitals as fc
from studies.ffn_capitals import cli as fc_cli

REPO = Path(__file__).resolve().parents[1]
TOY = REPO / "models" / "toy"
DEFAULTS = {"--limit": "2", "--prompting": "zero", "--context": "plain", "--chat-template": "off"}  # one condition
FAST = [*sum(DEFAULTS.items(), ()), "--no-figures"]


def argv(*change) -> list:
    """FAST with the options in ``change`` (flag, value, ...) replacing or joining its own."""
    given = dict(zip(change[::2], change[1::2]))
    return [*sum({**DEFAULTS, **given}.items(), ()), "--no-figures"]


def run(capsys, *args, module=fc) -> tuple[int, str, str]:
    status = module.main([str(a) for a in args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A finished ffn_capitals run of the toy pair (2 items, one condition)."""
    out = tmp_path_factory.mktemp("identity") / "run"
    assert fc.main([*FAST, "--out", str(out)]) == 0
    return out


@pytest.fixture
def folder(made, tmp_path):
    """A private copy of the finished run (tests below may overwrite it)."""
    return Path(shutil.copytree(made, tmp_path / "run"))


@pytest.mark.parametrize("change, named", [
    (["--seed", "1"], "seed 0 -> 1"),
    (["--limit", "3"], "limit 2 -> 3"),
    (["--source-items", "1"], "source-items 8 -> 1"),
    (["--prompting", "one"], "prompting ['zero'] -> ['one']"),
    (["--context", "harmful"], "context ['plain'] -> ['harmful']"),
    (["--top-k", "3"], "top-k 5 -> 3"),
    (["--batch-size", "1"], "batch-size 64 -> 1"),
    (["--split", "train"], "split test -> train"),
    (["--base", TOY / "chat", "--chat", TOY / "base"], "base model"),  # swapped: members are named
])
def test_a_changed_row_option_is_refused_naming_it(folder, capsys, change, named):
    before = (folder / "results.jsonl").read_bytes()
    status, _, err = run(capsys, *argv(*change), "--out", folder)
    assert status == 2 and err.count("\n") == 1 and err.startswith("error: ")
    assert "was made with different settings" in err and named in err, err
    assert "use a new --out folder or --overwrite" in err
    assert (folder / "results.jsonl").read_bytes() == before
    if change[0] == "--base":
        assert "toy/chat" in err.split("base model")[1].split(",")[0]  # base was toy/base, now toy/chat


def test_summary_only_checks_the_options_too(folder, capsys):
    status, _, err = run(capsys, *argv("--seed", "2"), "--out", folder, "--summary-only")
    assert status == 2 and "seed 0 -> 2" in err and "--summary-only with the options of that run" in err


def test_options_that_do_not_decide_rows_resume(folder, capsys):
    before = (folder / "results.jsonl").read_bytes()
    status, out, _ = run(capsys, *argv("--threads", "2"), "--out", folder)
    assert status == 0 and "wrote" in out
    assert (folder / "results.jsonl").read_bytes() == before  # nothing recomputed


def test_every_option_of_every_study_is_declared():
    """Each parser option is either row-deciding (fingerprinted) or declared not to be."""
    for module, parse in ((fc_cli, fc.parse_args), (benchmarks, benchmarks.parse_args),
                          (calibration, calibration.parse_args), (patching, patching.parse_args),
                          (syntaxgym, syntaxgym.parse_args)):
        dests = set(vars(parse([])))
        declared = set(module.ROW_OPTIONS) | set(module.OTHER_OPTIONS) | set(_common.PAIR_OPTIONS)
        assert dests == declared, (module.__name__, dests ^ declared)
        assert not set(module.ROW_OPTIONS) & set(module.OTHER_OPTIONS)


def test_fingerprint_is_written_before_rows_and_kept_in_meta(folder):
    record = json.loads((folder / "fingerprint.json").read_text())
    fp = record["fingerprint"]
    assert fp["study"] == "ffn_capitals" and fp["seed"] == 0 and fp["options"]["limit"] == 2
    assert fp["models"]["base"]["path"] == str(TOY / "base") and fp["models"]["chat"]["path"] == str(TOY / "chat")
    assert set(fp["versions"]) == {"torch", "transformers", "tokenizers"}
    assert fp["versions"]["torch"] == ".".join(torch.__version__.split(".")[:2])
    assert record["finished"] and json.loads((folder / "meta.json").read_text())["fingerprint"] == fp


@pytest.mark.parametrize("module", [patching, benchmarks, calibration, syntaxgym])
def test_another_studys_folder_is_refused_by_name(folder, capsys, module):
    status, _, err = run(capsys, "--limit", "2", "--out", folder, module=module)
    assert status == 2 and f"holds results of study 'ffn_capitals', not '{module.STUDY}'" in err, err
    assert "key field" not in err
    status, _, err = run(capsys, "--limit", "2", "--out", folder, "--overwrite", module=module)
    assert status == 2 and "holds results of study 'ffn_capitals'" in err  # --overwrite spares another study


def test_rows_without_a_fingerprint_are_refused(folder, capsys):
    (folder / "fingerprint.json").unlink()
    status, _, err = run(capsys, *FAST, "--out", folder)
    assert status == 2 and "has no fingerprint.json" in err and "--overwrite" in err


def test_overwrite_starts_afresh_and_deletes_only_the_studys_files(folder, capsys):
    (folder / "notes.txt").write_text("mine")
    (folder / "results.shard-1-of-2.jsonl").write_text('{"model": "base"}\n')  # an old shard's rows
    meta = json.loads((folder / "meta.json").read_text())
    assert "summary.csv" in meta["outputs"]
    (folder / "meta.json").write_text(json.dumps({**meta, "outputs": [*meta["outputs"], "old_figure.png"]}))
    (folder / "old_figure.png").write_bytes(b"png")  # as if an earlier invocation drew figures
    status, out, _ = run(capsys, *argv("--seed", "1"), "--out", folder, "--overwrite")
    assert status == 0 and "wrote" in out
    assert (folder / "notes.txt").read_text() == "mine"
    assert not (folder / "results.shard-1-of-2.jsonl").exists() and not (folder / "old_figure.png").exists()
    assert json.loads((folder / "fingerprint.json").read_text())["fingerprint"]["seed"] == 1
    assert len((folder / "results.jsonl").read_text().splitlines()) == 2 * 2  # models x items, nothing old
    meta = json.loads((folder / "meta.json").read_text())
    assert len(meta["invocations"]) == 1 and meta["seed"] == 1


def test_two_custom_pairs_get_their_own_default_folders(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    other = shutil.copytree(TOY / "chat", tmp_path / "tuned")
    for base, chat in ((TOY / "base", TOY / "chat"), (TOY / "base", other), (TOY / "chat", TOY / "base")):
        assert run(capsys, *argv("--limit", "1", "--base", base, "--chat", chat))[0] == 0
    folders = sorted(p.name for p in (tmp_path / "runs" / "ffn_capitals").iterdir())
    assert len(folders) == 3 and "custom" not in folders, folders
    assert {"custom-base-vs-chat", "custom-base-vs-tuned", "custom-chat-vs-base"} == {f[:-9] for f in folders}


# -- model identity -----------------------------------------------------------------------------
@pytest.fixture
def model_copy(tmp_path):
    return Path(shutil.copytree(TOY / "base", tmp_path / "model"))


def _rewrite_weights(folder: Path, change) -> None:
    from safetensors.torch import load_file, save_file

    path = folder / "model.safetensors"
    tensors = load_file(path)
    change(tensors)
    save_file(tensors, path, metadata={"format": "pt"})


@pytest.mark.parametrize("big", [False, True], ids=["hashed-whole", "header-and-samples"])
def test_local_identity_follows_config_and_weights_only(model_copy, monkeypatch, big):
    from interp import identity

    if big:  # treat the toy's 7 MB file as a large one: header, size and sampled blocks only
        monkeypatch.setattr(identity, "FULL_HASH_BELOW", 0)
    first = interp.model_identity(str(model_copy))
    assert first["kind"] == "local" and first["path"] == str(model_copy.resolve())
    (model_copy / "README.md").write_text("notes")
    (model_copy / "config.json").touch()
    assert interp.model_identity(str(model_copy)) == first  # timestamps and notes do not count

    config = json.loads((model_copy / "config.json").read_text())
    (model_copy / "config.json").write_text(json.dumps({**config, "rope_theta": 12345.0}))
    changed = interp.model_identity(str(model_copy))
    assert changed["digest"] != first["digest"]
    assert [n for n in changed["files"] if changed["files"][n] != first["files"][n]] == ["config.json"]

    (model_copy / "config.json").write_text(json.dumps(config))
    restored = interp.model_identity(str(model_copy))
    name = "model.safetensors"
    _rewrite_weights(model_copy, lambda t: t.update({k: v * 1.5 for k, v in t.items()}))  # same shapes: "retrained"
    retrained = interp.model_identity(str(model_copy))
    assert retrained["files"][name] != restored["files"][name]
    assert [n for n in retrained["files"] if retrained["files"][n] != restored["files"][n]] == [name]
    if big:  # the header (names, shapes, offsets) is the same: the sampled data tells them apart
        assert retrained["files"][name]["header_sha256"] == restored["files"][name]["header_sha256"]
    _rewrite_weights(model_copy, lambda t: t.update({k: v[:1] for k, v in list(t.items())[:1]}))  # a shape
    reshaped = interp.model_identity(str(model_copy))["files"][name]
    assert reshaped != retrained["files"][name]
    if big:
        assert reshaped["header_sha256"] != retrained["files"][name]["header_sha256"]


def test_local_identity_of_a_big_file_reads_little(model_copy, monkeypatch):
    from interp import identity

    monkeypatch.setattr(identity, "FULL_HASH_BELOW", 0)
    read = []
    real_open = open

    class Counting:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def seek(self, *a):
            return self.f.seek(*a)

        def read(self, n=-1):
            data = self.f.read(n)
            read.append(len(data))
            return data

    monkeypatch.setattr(identity, "open", lambda p, mode="r": Counting(real_open(p, mode)), raising=False)
    interp.model_identity(str(model_copy))
    size = (model_copy / "model.safetensors").stat().st_size
    assert 0 < sum(read) < size / 10


def test_hub_identity_resolves_a_cached_commit(tmp_path, monkeypatch):
    from interp import identity

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "models--org--name"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "snapshots" / commit / "config.json").write_text("{}")
    found = identity.hub_identity("org/name", cache_dir=tmp_path)
    assert found["revision"] == commit and found["revision_kind"] == "commit"

    import huggingface_hub

    def offline(*args, **kwargs):
        raise OSError("offline")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    missing = identity.hub_identity("org/other", cache_dir=tmp_path)
    assert missing["revision"] == "main" and missing["revision_kind"] == "requested"
    assert missing["digest"] != identity.hub_identity("org/other", revision="v2", cache_dir=tmp_path)["digest"]


def test_fingerprint_names_members():
    pair = interp.load_pair(base=str(TOY / "base"), chat=str(TOY / "chat"))
    swapped = interp.load_pair(base=str(TOY / "chat"), chat=str(TOY / "base"))
    a = _identity.run_fingerprint("s", pair, {}, 0)
    b = _identity.run_fingerprint("s", swapped, {}, 0)
    assert a != b and a["models"]["base"] == b["models"]["chat"]
    assert _common.pair_folder_name(pair) != _common.pair_folder_name(swapped)
