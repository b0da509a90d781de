# The two commands of the README:
#   make run    set up .venv and run the main job (wb run exp1)
#   make test   set up .venv and run the test suite
# Set-up is idempotent: it reinstalls only when pyproject.toml or constraints.txt change.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run test bench gpu-wheels

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[digits,test]"
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/wb run exp1

test: $(STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[bench]"
	$(BIN)/python benchmarks/run_all.py

# Wheels for benchmarks/gpu_check.sh on a GPU machine with no package index, whose python3 has
# torch but lacks these: the versions installed here, for CPython $(GPU_PYTHON) on x86-64 Linux.
GPU_PYTHON ?= 3.12
GPU_WHEELS := tomli_w pydantic pydantic_core pydantic_settings python_dotenv annotated_types typing_inspection diffusers importlib_metadata setuptools
gpu-wheels: $(STAMP)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[bench]"
	$(BIN)/python -m pip freeze --all | tr '-' '_' | grep -i -E '^($(shell echo $(GPU_WHEELS) | tr ' ' '|'))==' > $(VENV)/gpu-wheels.txt
	$(BIN)/python -m pip download --quiet --no-deps --only-binary=:all: --python-version $(GPU_PYTHON) --implementation cp \
		--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
		-d .whl -r $(VENV)/gpu-wheels.txt
