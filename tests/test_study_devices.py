"""A study run with blocks offloaded to disk (``--device-map ... --offload-folder``) writes the
rows of the single-device run; a bad map is one ``error:`` line and exit status 2."""

from __future__ import annotations

import json
import math
from functools import partial

from study_cli import rows_of, run_study_cli

cli = partial(run_study_cli, "studies.patching")
ARGS = ("--limit", "1", "--hooks", "resid_pre", "--no-figures")


def _numbers_equal(a, b, tol=1e-5) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_numbers_equal(a[k], b[k], tol) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_numbers_equal(x, y, tol) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or abs(a - b) <= tol
    return a == b


def test_disk_offloaded_study_writes_the_single_device_rows(tmp_path):
    cli(*ARGS, "--out", str(tmp_path / "one"))
    cli(*ARGS, "--out", str(tmp_path / "offload"), "--device-map", "model.layers.1-5=disk,*=cpu",
        "--offload-folder", str(tmp_path / "weights"))
    # the map reached interp.load, parsed (safetensors weights are read from the model's own file, so
    # the offload folder may stay empty); tests/test_devices.py checks the offload itself
    meta = json.loads((tmp_path / "offload" / "meta.json").read_text())
    assert meta["load_options"]["device_map"] == {**{f"model.layers.{i}": "disk" for i in range(1, 6)}, "*": "cpu"}
    one, offloaded = rows_of(tmp_path / "one"), rows_of(tmp_path / "offload")
    assert len(one) == len(offloaded) > 0
    assert all(_numbers_equal(a, b) for a, b in zip(one, offloaded))


def test_bad_device_map_is_one_error_line(tmp_path, capsys):
    from studies.patching import main  # in process: the same run_cli path as the command, faster

    code = main([*ARGS, "--out", str(tmp_path), "--device-map", "model.layer.1=disk,*=cpu",
                 "--offload-folder", str(tmp_path / "w")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith(
        "error: device_map key 'model.layer.1' is not a module of this llama model; did you mean model.layers.1")


def test_readme_device_map_commands_parse():
    """The README's across-devices commands take options the study has and a map interp reads."""
    import re
    import shlex
    from pathlib import Path

    from interp.devices import parse_device_map
    from studies.ffn_capitals.cli import parse_args

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text.split("### Across devices", 1)[1].split("\n### ", 1)[0]
    commands = [line.strip() for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S)
                for line in re.sub(r"\\\n\s*", " ", block).splitlines() if line.strip().startswith("python -m studies.")]
    assert len(commands) == 2
    for command in commands:
        args = parse_args(shlex.split(command.split("#")[0])[3:])
        assert isinstance(parse_device_map(args.device_map), dict)
