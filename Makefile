# Thin wrappers over `kmcorrect`; knobs are variables: make data CORPUS=path/to/corpus.txt
PYTHON    ?= python3
KMCORRECT ?= $(PYTHON) -m kmcorrect
CORPUS    ?=
NAME      ?= $(if $(CORPUS),$(basename $(notdir $(CORPUS))),default)
SEED      ?= 0
WORKERS   ?= $(shell nproc 2>/dev/null || echo 1)
DATA      ?= data/$(NAME)
MODEL     ?= editor
RUN       ?= runs/$(MODEL)-$(NAME)
ARTIFACT  ?= artifacts/$(MODEL)-$(NAME)
MINUTES   ?=
PORT      ?= 50051
DEVICE    ?= cpu
INPUT     ?=
SUITE     ?=
FULL      ?=
HYBRID    ?=
CHAR_TRANSFORMER ?=
SUDO      := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# System tools the data engine drives: PDF extraction, OCR, Khmer fonts, LibreOffice.
APT_PACKAGES := poppler-utils tesseract-ocr tesseract-ocr-khm tesseract-ocr-eng \
	fonts-khmeros fonts-noto-core fontconfig libreoffice-writer-nogui

.PHONY: help setup setup-apt test lint check proto data train eval export serve correct bench soak demo pipeline

help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

setup-apt:  ## install the system tools (apt)
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $(APT_PACKAGES)

setup: setup-apt  ## install system tools and the package with every CPU extra
	$(PYTHON) -m pip install -q -e '.[train,serve,dev,bench]'

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

train:  ## train $(MODEL) on $(DATA) into $(RUN) (MINUTES= time budget)
	$(KMCORRECT) train --model $(MODEL) --data $(DATA) --run-dir $(RUN) $(if $(MINUTES),--max-minutes $(MINUTES))

eval:  ## score $(RUN) on the test split of $(DATA): report.md/.json/.html
	$(KMCORRECT) eval --run-dir $(RUN) --data $(DATA)

export:  ## verified ONNX artifact (+opt/int8/fp16) of $(RUN) into artifacts/ (FORCE=1, TENSORRT=1)
	$(KMCORRECT) export --run-dir $(RUN) --data $(DATA) $(if $(FORCE),--force) $(if $(TENSORRT),--tensorrt)

serve:  ## serve $(ARTIFACT) over gRPC on $(PORT) until Ctrl-C / SIGTERM
	$(KMCORRECT) serve --artifact $(ARTIFACT) --port $(PORT) --device $(DEVICE)

correct:  ## correct INPUT (or stdin) with $(ARTIFACT), one line out per line in
	$(KMCORRECT) correct --artifact $(ARTIFACT) $(if $(INPUT),--input $(INPUT))

bench:  ## benchmark suites [SUITE=engines,decoding,server,peers] [FULL=1] [HYBRID=artifact] [CHAR_TRANSFORMER=run]
	$(KMCORRECT) bench --artifact $(ARTIFACT) --data $(DATA) --run-dir $(RUN) --device $(DEVICE) \
		$(if $(SUITE),--suite $(SUITE)) $(if $(FULL),--full) \
		$(if $(HYBRID),--hybrid $(HYBRID)) $(if $(CHAR_TRANSFORMER),--char-transformer $(CHAR_TRANSFORMER))

soak:  ## fuzz 10,000 cases, then 50,000 requests at concurrency 64 on a real server (tiny model)
	KMCORRECT_FUZZ_EXAMPLES=2000 $(PYTHON) -m pytest -q tests/test_fuzz.py
	KMCORRECT_SOAK_REQUESTS=50000 KMCORRECT_SOAK_CONCURRENCY=64 \
	KMCORRECT_SOAK_OUT=$(CURDIR)/benchmarks/results/$$($(PYTHON) -m benchmarks.common) \
	$(PYTHON) -m pytest -q tests/test_soak.py

pipeline:  ## data → train → eval → export (TensorRT on a GPU) → bench engines, each step once; one log
	$(KMCORRECT) pipeline --model $(MODEL) --data $(DATA) --run-dir $(RUN) --artifact $(ARTIFACT) \
		$(if $(CORPUS),--corpus $(CORPUS)) $(if $(MINUTES),--max-minutes $(MINUTES))

demo: $(ARTIFACT)/manifest.json  ## end to end: data → train → export → serve → correct over gRPC → stop
	$(KMCORRECT) demo --artifact $(ARTIFACT) --data $(DATA)

$(DATA)/test.jsonl:
	$(MAKE) data

$(RUN)/checkpoints/best.json: $(DATA)/test.jsonl
	$(MAKE) train

# The demo serves the optimized fp32 graphs; `make export` adds the int8 and fp16 variants,
# whose CER change against fp32 is held to a bound a 10-minute CPU model may not meet.
$(ARTIFACT)/manifest.json: $(RUN)/checkpoints/best.json
	$(KMCORRECT) export --run-dir $(RUN) --data $(DATA) --out $(ARTIFACT) --variants fp32,opt --force
