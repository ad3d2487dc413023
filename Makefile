# par: `make demo` and `make test` set everything up on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PAR := $(VENV)/bin/par
STAMP := $(VENV)/.installed
# torch 2.14.1 / torchvision 0.29.1 are the releases open_clip's torchvision import works with here.
TORCH_PINS := torch==2.14.1 torchvision==0.29.1

DEMO := demo
STORE ?= $(DEMO)/store.zarr
EPOCHS ?= 6
FRAMES ?= 1 2 4 6
SEEDS ?= 1
VARIANTS ?= fusion no-fusion
ABLATION_MODEL ?= vtf-par-small

.PHONY: setup test demo bench ablation clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PINS)
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest tests

# Synthetic data + random CLIP weights (see README): the whole pipeline in a few minutes on a CPU.
demo: $(STAMP)
	rm -rf $(DEMO) && mkdir -p $(DEMO)
	$(PAR) synth $(DEMO)/mars --tracklets 1000 --frames 3-6 --seed 0
	$(PAR) manifest mars $(DEMO)/mars --out $(DEMO)/manifest.jsonl
	$(PAR) extract $(DEMO)/manifest.jsonl --out $(DEMO)/store.zarr --model par-tiny-clip --allow-random-init
	$(PAR) train $(DEMO)/store.zarr --out $(DEMO)/run --model vtf-par-small --epochs 12 --warmup-epochs 1 --frames 6
	$(PAR) eval $(DEMO)/store.zarr --checkpoint $(DEMO)/run --out $(DEMO)/eval --baseline

$(DEMO)/store.zarr:
	$(MAKE) demo

ablation: $(STAMP) $(STORE)
	$(PAR) ablation $(STORE) --out results --epochs $(EPOCHS) --frames "$(FRAMES)" --variants "$(VARIANTS)" --seeds $(SEEDS) --model $(ABLATION_MODEL)

bench: $(STAMP)
	$(PAR) bench --out bench --model ViT-B-16 --tracklets 40 --frames 4 --batch-size 16 --workers 2 \
		--fusion-model vtf-par-small --train-batch 8 --epochs 6 --sweep-epochs 1

clean:
	rm -rf $(DEMO) results bench
