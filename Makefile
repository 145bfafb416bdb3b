# Thin wrappers over `kmcorrect`; knobs are variables: make data CORPUS=path/to/corpus.txt
PYTHON    ?= python3
KMCORRECT ?= $(PYTHON) -m runtime.cli
CORPUS    ?=
NAME      ?= $(if $(CORPUS),$(basename $(notdir $(CORPUS))),default)
SEED      ?= 0
WORKERS   ?= $(shell nproc 2>/dev/null || echo 1)
DATA      ?= data/$(NAME)
MODEL     ?= hybrid
RUN       ?= runs/$(MODEL)-$(NAME)
SUDO      := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# System tools the data engine drives: PDF extraction, OCR, Khmer fonts, LibreOffice.
APT_PACKAGES := poppler-utils tesseract-ocr tesseract-ocr-khm tesseract-ocr-eng \
	fonts-khmeros fonts-noto-core fontconfig libreoffice-writer-nogui

.PHONY: help setup setup-apt test lint check proto data eval export

help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

setup-apt:  ## install the system tools (apt)
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $(APT_PACKAGES)

setup: setup-apt  ## install system tools and the package with every CPU extra
	$(PYTHON) -m pip install -q -e '.[train,serve,dev]'

test:  ## run the test suite
	$(PYTHON) -m pytest -q

lint:  ## ruff check and format check
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .

check: lint test  ## lint, then the tests (what CI runs)

proto:  ## regenerate the gRPC stubs from proto/*.proto
	$(PYTHON) proto/generate.py

data:  ## build pairs + data card into data/$(NAME) (CORPUS= to use your own)
	$(KMCORRECT) data $(if $(CORPUS),--corpus $(CORPUS)) --out $(DATA) --seed $(SEED) --workers $(WORKERS)

eval:  ## score $(RUN) on the test split of $(DATA): report.md/.json/.html
	$(KMCORRECT) eval --model $(RUN) --data $(DATA)

export:  ## verified ONNX artifact (+opt/int8/fp16) of $(RUN) into artifacts/ (FORCE=1, TENSORRT=1)
	$(KMCORRECT) export --model $(RUN) --data $(DATA) $(if $(FORCE),--force) $(if $(TENSORRT),--tensorrt)
