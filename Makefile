# The README's two commands: `make demo` (main study on the default pair) and `make test`.
# Each creates .venv on first use and installs what it needs; nothing else is assumed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# PyTorch's default OpenMP spin-wait stalls every small op ~15 ms on 2 shared vCPUs.
export OMP_WAIT_POLICY := PASSIVE
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test bench install clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# The CPU wheel of torch (a plain `torch` could pull a multi-GB CUDA build).
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(PY) -m studies.ffn_capitals --pair toy

test: $(VENV)/.installed
	$(PY) -m pytest

# TransformerLens 3.9 (the last with HookedTransformer) cannot share a venv with 4.x:
# the benchmark runs it from its own venv in a subprocess.
.venv-tl3/.installed:
	$(PYTHON) -m venv .venv-tl3
	.venv-tl3/bin/python -m pip install --quiet torch==2.13.0 transformer-lens==3.9.0
	touch $@

bench: $(VENV)/.installed .venv-tl3/.installed
	$(PY) -m bench

clean:
	rm -rf $(VENV) .venv-tl3 runs
