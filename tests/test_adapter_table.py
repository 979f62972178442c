"""The adapter row is the one table: generic code (all of ``interp`` but ``interp/adapters.py``)
never decides anything by a family's name or a module's class name. An AST walk flags

* a string literal that is a family name (``"gpt2"``, ``"llama"`` ...) or an HF class-name
  part (``"RMSNorm"``, ``"ForCausalLM"`` ...), outside docstrings;
* ``__name__`` / ``__qualname__`` / ``model_type`` / ``architectures`` used to decide: compared,
  used as a key, or asked ``.endswith(...)`` and the like (in an f-string message it is fine);
* ``isinstance`` / ``type(...) is`` against a model class imported from ``transformers``
  (``LlamaForCausalLM``, ``GPT2Attention`` ...; cache classes such as ``DynamicCache`` are
  no family's).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from interp.adapters import ARCHITECTURES

ROOT = Path(__file__).resolve().parents[1] / "interp"
NAME_ATTRS = {"__name__", "__qualname__", "model_type", "architectures"}
CLASS_PARTS = ("RMSNorm", "LayerNorm", "ForCausalLM", "Attention", "DecoderLayer", "Block")
MODEL_CLASS = re.compile(r"^(GPT2|Llama|Mistral|Qwen2|GPTNeoX|GPTJ|Gemma|Phi|OPT|Bloom|Falcon)|For|PreTrainedModel|Norm|Attention")
FAMILY_NAMES = set(ARCHITECTURES) | {"gpt_neox_sequential", "neox", "gemma", "phi", "opt", "bloom", "falcon"}


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def violations(source: str, filename: str) -> list[str]:
    tree = ast.parse(source, filename)
    parents = {id(child): node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    docs = _docstrings(tree)
    from_transformers = {alias.asname or alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                         and (node.module or "").startswith("transformers") for alias in node.names
                         if MODEL_CLASS.search(alias.name)}
    found = []
    for node in ast.walk(tree):
        where = f"{filename}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            in_message = isinstance(parents.get(id(node)), ast.JoinedStr)
            if not in_message and (node.value in FAMILY_NAMES or any(part in node.value for part in CLASS_PARTS)
                                   and " " not in node.value):
                found.append(f"{where}: string {node.value!r}")
        if isinstance(node, ast.Attribute) and node.attr in NAME_ATTRS:
            parent = parents.get(id(node))
            deciding = (isinstance(parent, ast.Compare)
                        or isinstance(parent, ast.Subscript) and parent.slice is node
                        or isinstance(parent, ast.Attribute)  # .endswith(...), .lower() ...
                        or isinstance(parent, ast.Call) and isinstance(parent.func, ast.Attribute)
                        and parent.func.attr in ("get", "pop", "__contains__"))
            if deciding:
                found.append(f"{where}: decides on .{node.attr}")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "isinstance":
            names = {n.id for n in ast.walk(node.args[1]) if isinstance(n, ast.Name)} if len(node.args) > 1 else set()
            if names & from_transformers:
                found.append(f"{where}: isinstance against transformers class {sorted(names & from_transformers)}")
        if isinstance(node, ast.Compare) and any(isinstance(op, (ast.Is, ast.IsNot, ast.Eq, ast.In, ast.NotIn)) for op in node.ops):
            names = {n.id for side in node.comparators for n in ast.walk(side) if isinstance(n, ast.Name)}
            if names & from_transformers:
                found.append(f"{where}: type check against transformers class {sorted(names & from_transformers)}")
    return found


def test_generic_code_never_looks_at_class_or_family_names():
    files = sorted(p for p in ROOT.rglob("*.py") if p.name != "adapters.py" or p.parent != ROOT)
    assert len(files) > 10
    found = [v for p in files for v in violations(p.read_text(), str(p.relative_to(ROOT.parent)))]
    assert not found, "generic code decides by family or class name (move it into interp.adapters.Arch):\n" + "\n".join(found)


@pytest.mark.parametrize("snippet", [
    'OUT_PROJ = {"gpt2": "attn.c_proj"}',
    "ok = type(norm).__name__.endswith('RMSNorm')",
    "if lm.model.config.model_type == name: pass",
    "path = TABLE[config.model_type]",
    "from transformers import LlamaForCausalLM\nok = isinstance(m, LlamaForCausalLM)",
])
def test_the_walk_sees_each_kind_of_name_check(snippet):
    assert violations(snippet, "snippet.py")


def test_messages_and_docstrings_may_name_them():
    ok = '"""Llama and gpt2 rows."""\nmsg = f"got {type(x).__name__} for {config.model_type!r}"'
    assert violations(ok, "ok.py") == []
