# par: `make demo` and `make test` set everything up on a fresh machine. Sizes and paths are variables
# (`make demo DEMO_TRACKLETS=50`, or the same names in the environment).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PAR := $(VENV)/bin/par
STAMP := $(VENV)/.installed
# torch 2.14.1 / torchvision 0.29.1 are the releases open_clip's torchvision import works with here.
TORCH_PINS := torch==2.14.1 torchvision==0.29.1

# The demo: a synthetic MARS-shaped dataset and a tiny random-weight CLIP (see README).
DEMO ?= demo
DEMO_TRACKLETS ?= 1000
DEMO_FRAMES ?= 6-12
DEMO_EPOCHS ?= 12
# make ablation: one store, every (variant, T, seed) point trained from it.
STORE ?= $(DEMO)/store.zarr
RESULTS ?= results
RECIPE ?= vtf-par-official
EPOCHS ?= 8
WARMUP ?= 1
# The demo and the default sweep train the CPU-sized model (vtf-par-small) with a higher rate than the recipe's
# 1e-3 (which is the paper model's): it learns the synthetic task in few epochs. Real runs leave LR to the recipe.
LR ?= 0.003
FRAMES ?= 1 2 4 6
SEEDS ?= 3
VARIANTS ?= fusion no-fusion
ABLATION_MODEL ?= vtf-par-small
FUSION_INIT ?= random
DEVICE ?= cpu
# make bench: CPU-sized by default; scripts/gpu_check.sh runs the GPU sizes.
BENCH ?= bench
BENCH_CLIP ?= ViT-B-16-quickgelu
BENCH_TRACKLETS ?= 40
BENCH_FRAMES ?= 4
BENCH_EPOCHS ?= 6
BENCH_HOST_FRAMES ?= 4096
BENCH_SWEEP_FRAMES ?= 1 2 4 6
BENCH_TRAIN_BATCH ?= 8
BENCH_DEPLOY_SECONDS ?= 2
# make track-bench: par track on synthetic footage (tracking, attributes, throughput, memory) with the demo's model,
TRACK_CHECKPOINT ?= $(DEMO)/run
TRACK_SEEDS ?= 3
TRACK_SECONDS ?= 20
TRACK_MINUTES ?= 1 10
TRACK_CAMERAS ?= 1 2 3 4 6 8
# ... and par link on synthetic sites (par synth --video --cameras K): camera counts, sites of each, people, seconds,
# and the tracks of the site that times the linker alone.
LINK_CAMERAS ?= 3 6
LINK_SEEDS ?= 3
LINK_PEOPLE ?= 12
LINK_SECONDS ?= 60
LINK_SCALE ?= 10000
# The page tests open report.html and tracks.html in Debian's chromium (Playwright drives it; no browser download).
CHROMIUM ?= /usr/bin/chromium
# The live-camera tests serve the synthetic scene over RTSP with GStreamer's RTSP server (Debian's packages, reached
# through Debian's own python3, which has python3-gi).
STREAM_PYTHON ?= /usr/bin/python3
STREAM_PACKAGES := python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good
# make test: every behaviour once, on 2 processes; make test-all adds the slow variants (kill -9 at ten random points).
# Scopes of tests (a file, or a class in one: tests/conftest.py) go to the processes whole, longest first, and the
# 15 slowest steps are listed at the end, so every run shows where the time went.
TEST_PROCESSES ?= 2
TEST_DIST := --dist loadscope --no-loadscope-reorder --durations=15

.PHONY: setup browser stream-servers test test-all lint demo bench track-bench ablation clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PINS)
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

browser:
	@test -x "$(CHROMIUM)" || { command -v apt-get >/dev/null || { echo "error: $(CHROMIUM) is missing and there is \
		no apt-get here: install Chromium and pass CHROMIUM=/path/to/chromium" >&2; exit 2; }; \
		SUDO=$$([ "$$(id -u)" -eq 0 ] || echo sudo); $$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q chromium >/dev/null; }

stream-servers:
	@$(STREAM_PYTHON) tests/servers/rtsp_server.py --check 2>/dev/null || { command -v apt-get >/dev/null || { echo \
		"error: GStreamer's RTSP server is missing and there is no apt-get here: install $(STREAM_PACKAGES) and pass \
		STREAM_PYTHON=/path/to/its/python3" >&2; exit 2; }; SUDO=$$([ "$$(id -u)" -eq 0 ] || echo sudo); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q \
		--no-install-recommends $(STREAM_PACKAGES) >/dev/null; }

test: $(STAMP) browser stream-servers
	PAR_CHROMIUM=$(CHROMIUM) PAR_STREAM_PYTHON=$(STREAM_PYTHON) $(PY) -m pytest tests -m "not slow" -n $(TEST_PROCESSES) $(TEST_DIST)

test-all: $(STAMP) browser stream-servers
	PAR_CHROMIUM=$(CHROMIUM) PAR_STREAM_PYTHON=$(STREAM_PYTHON) $(PY) -m pytest tests -n $(TEST_PROCESSES) $(TEST_DIST)

lint: $(STAMP)
	$(PY) -m ruff check .

# The demo's folder is its own: it is replaced only when it carries the demo's marker.
demo: $(STAMP)
	@if [ -e "$(DEMO)" ] && [ ! -e "$(DEMO)/.par-demo" ]; then \
		echo "error: $(DEMO) exists and was not made by make demo; choose another DEMO=" >&2; exit 2; fi
	rm -rf "$(DEMO)" && mkdir -p "$(DEMO)" && touch "$(DEMO)/.par-demo"
	$(PAR) synth $(DEMO)/mars --tracklets $(DEMO_TRACKLETS) --frames-per-tracklet $(DEMO_FRAMES) --seed 0
	$(PAR) manifest mars $(DEMO)/mars --out $(DEMO)/manifest.jsonl
	$(PAR) extract $(DEMO)/manifest.jsonl --out $(DEMO)/store.zarr --clip-model par-tiny-clip --allow-random-init --precision fp32
	$(PAR) train $(DEMO)/store.zarr --out $(DEMO)/run --model vtf-par-small --fusion-init random --epochs $(DEMO_EPOCHS) \
		--warmup-epochs 1 $(if $(LR),--lr $(LR))
	$(PAR) eval $(DEMO)/store.zarr --checkpoint $(DEMO)/run --baseline
	$(PAR) report $(DEMO)/run --out $(DEMO)/report

$(DEMO)/store.zarr:
	$(MAKE) demo

ablation: $(STAMP) $(STORE)
	$(PAR) ablation $(STORE) --out $(RESULTS) --recipe $(RECIPE) --epochs $(EPOCHS) --warmup-epochs $(WARMUP) \
		--sweep-frames "$(FRAMES)" --variants "$(VARIANTS)" --seeds $(SEEDS) --model $(ABLATION_MODEL) \
		--fusion-init $(FUSION_INIT) --device $(DEVICE) $(if $(LR),--lr $(LR))
	$(PAR) report $(RESULTS) --out $(RESULTS)/report

bench: $(STAMP)
	$(PAR) bench --out $(BENCH) --clip-model $(BENCH_CLIP) --tracklets $(BENCH_TRACKLETS) \
		--frames-per-tracklet $(BENCH_FRAMES) --batch-size 16 --workers 2 --fusion-model vtf-par-small \
		--train-batch $(BENCH_TRAIN_BATCH) --epochs $(BENCH_EPOCHS) --sweep-epochs 1 --sweep-frames "$(BENCH_SWEEP_FRAMES)" \
		--host-frames $(BENCH_HOST_FRAMES) --deploy-seconds $(BENCH_DEPLOY_SECONDS)

$(DEMO)/run/best.json:
	$(MAKE) demo

track-bench: $(STAMP) $(TRACK_CHECKPOINT)/best.json
	$(PAR) bench --out $(BENCH) --part track,link --track-checkpoint $(TRACK_CHECKPOINT) --track-seeds $(TRACK_SEEDS) \
		--track-seconds $(TRACK_SECONDS) --track-minutes "$(TRACK_MINUTES)" --track-cameras "$(TRACK_CAMERAS)" \
		--link-cameras "$(LINK_CAMERAS)" --link-seeds $(LINK_SEEDS) --link-people $(LINK_PEOPLE) \
		--link-seconds $(LINK_SECONDS) --link-scale $(LINK_SCALE)

# Removes only what these targets made: the demo folder (its marker), the ablation results and bench folders
# (par's output markers).
clean:
	@for d in "$(DEMO)" "$(RESULTS)" "$(BENCH)"; do \
		if [ -e "$$d/.par-demo" ] || [ -e "$$d/.par-output.json" ] || [ -e "$$d/bench.json" ]; then \
			rm -rf "$$d" && echo "removed $$d"; \
		elif [ -e "$$d" ]; then echo "kept $$d: not made by this Makefile"; fi; done
