"""Every command's config, and the recipes that fill the two stages'.

A value comes from, lowest first: the field default, for the two stages the recipe
(`data_manifests/recipes/<name>.json`, its `extract` or `train` section), a `--config` JSON file, the command line.
What the file or command line changes against the recipe is recorded as the run's overrides, so a store or
checkpoint says exactly how it departs from the recipe it names. The other commands (eval, predict, synth, bench)
are built and checked from their fields the same way, without a recipe.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from .compiling import COMPILE_MODES
from .data.layouts import LAYOUTS
from .data.texts import TEXT_SOURCES
from .deploy import RUNTIMES
from .engine.resident import CACHE_TIERS
from .errors import ParError
from .experiments import DEFAULT_EXPERIMENT, TRACKERS
from .footage.linking import CUES
from .options import as_dict, build, coerce, option, results_keys
from .precision import PRECISIONS
from .resources import load_json, shipped_names
from .store.format import FORMATS

DEFAULT_RECIPE = "vtf-par-official"


def runtime_option() -> Any:
    """`--runtime` of par predict and par track (par_pipeline/deploy/runtime.py)."""
    return option("auto", "what runs CLIP and the fusion model: torch (a checkpoint), onnxruntime or openvino (a "
                  "`par export` folder); auto: by what --checkpoint names", choices=RUNTIMES)


@dataclass
class ExtractConfig:
    out: str = option("", "token store to write: a zarr folder, or a .h5/.hdf5 file", cli=False, affects_results=False)
    recipe: str = option(DEFAULT_RECIPE, "recipe the defaults come from", cli=False)
    clip_model: str = option("ViT-B-16-quickgelu", "open_clip model name (or config JSON); the weights must be this "
                             "architecture (OpenAI's ViT-B/16 is ViT-B-16-quickgelu)")
    pretrained: str | None = option(None, "CLIP weights: a local file (OpenAI TorchScript archive ViT-B-16.pt, a "
                                    "state dict .pt/.bin, .safetensors) or an open_clip tag such as openai (online)")
    allow_random_init: bool = option(False, "random CLIP weights: tests and the demo only")
    weights_seed: int = option(0, "seed of the random CLIP weights (with --allow-random-init)")
    format: str | None = option(None, "zarr or h5 (default: from the --out suffix)", choices=FORMATS,
                                affects_results=False)
    dtype: str = option("float16", "stored token dtype (int8: per-token scales, half the bytes)",
                        choices=("float16", "float32", "int8"))
    precision: str = option("fp16", "CLIP arithmetic: fp16 (the reference), bf16 or fp32", choices=PRECISIONS)
    image_size: int = option(224, "input side in pixels (must equal the CLIP model's)", minimum=1)
    pad: str = option("zero-square", "zero-square: centre each crop on a black square first; none: stretch",
                      choices=("zero-square", "none"))
    interpolation: str = option("bilinear", "resize filter", choices=("bilinear", "bicubic"))
    mean: list[float] = option([0.5, 0.5, 0.5], "normalisation mean, R,G,B")
    std: list[float] = option([0.5, 0.5, 0.5], "normalisation std, R,G,B")
    prompt_template: str | None = option(None, "template of the 'prompts' text source (default: the paper's, "
                                         "'the pedestrian has an attribute {phrase}')")
    views: int = option(1, "views stored per training frame: the original, its flip, then pad-and-crop views",
                        minimum=1, maximum=64)
    view_seed: int = option(0, "seed of the pad-and-crop views")
    view_pad: int = option(10, "zero padding before the random crop of a pad-and-crop view (the reference's Pad(10))",
                           minimum=0)
    max_frames_per_tracklet: int | None = option(None, "keep K evenly spaced frames per tracklet", minimum=1)
    on_bad_frame: str = option("error", "a corrupt or missing frame: stop with an error, or skip it",
                               choices=("error", "skip"))
    shard_frames: int = option(64, "frames per zarr shard file", minimum=1)
    decode: str = option("pil", "JPEG decoding: pil (in CPU loader workers) or torchvision (batched on the extraction "
                         "device: nvJPEG on a GPU)", choices=("pil", "torchvision"))
    batch_size: int = option(64, "frames per CLIP batch", minimum=1, affects_results=False)
    workers: int = option(2, "JPEG decode worker processes", minimum=0, affects_results=False)
    writers: int = option(4, "shard writer threads: each writes whole shards, so the kernel's copies of tokens into "
                          "files run side by side (`make bench` measures 1, 2 and 4)", minimum=1, maximum=16,
                          affects_results=False)
    device: str = option("cpu", "cpu, cuda or cuda:N", affects_results=False)
    compile: bool = option(False, "torch.compile the image encoder (falls back to eager where it fails)",
                           affects_results=False)


def _temporal_choices() -> tuple[str, ...]:
    return ("mean", *shipped_names("models/temporal"))


@dataclass
class TrainConfig:
    store: str = option("", "token store from `par extract`", cli=False, affects_results=False)
    out: str = option("runs/vtf-par", "run folder to write", affects_results=False)
    recipe: str = option(DEFAULT_RECIPE, "recipe the defaults come from", cli=False)
    model: str = option("vtf-par", "fusion model config name or JSON (vtf-par, vtf-par-small)")
    fusion: bool = option(True, "the fusion Transformer; off: the paper's 'w/o FusionFormer' (fully connected)")
    text_tokens: bool = option(True, "CLIP text tokens for the attributes; off: learned queries")
    text_source: str = option("words", "text fed to CLIP: words (the reference's bare words), prompts (the "
                              "paper's sentences), phrases (bare phrases)", choices=TEXT_SOURCES)
    temporal: str = option("mean", "how frames are combined: mean (the paper) or a temporal model config",
                           choices=_temporal_choices())
    depth: int | None = option(None, "fusion blocks (default: the model config's; the paper: 1)", minimum=1)
    drop_path: float = option(0.1, "DropPath rate of the fusion block", minimum=0.0, maximum=0.9)
    fusion_init: str | None = option(None, "weights of the fusion block and final norm: an ImageNet ViT-B/16 file "
                                     "(jx_vit_base_p16_224-80ecf9dd.pth, .safetensors), timm:<name> (online), or "
                                     "random")
    require_fusion_init: bool = option(True, "refuse to start without --fusion-init", cli=False)
    frames: int = option(6, "T frames per tracklet", minimum=1)
    eval_frames: int | None = option(None, "T for evaluation (default: --frames)", minimum=1)
    eval_sampling: str = option("fixed", "evaluation frames: fixed (evenly spaced) or random (the reference, "
                                "keyed by --seed)", choices=("fixed", "random"))
    use_views: bool = option(True, "draw a stored view per training frame when the store has several")
    epochs: int = option(20, "training epochs", minimum=1)
    batch_size: int = option(16, "tracklets per batch", minimum=2)
    lr: float = option(1e-3, "peak learning rate (Adam)", above=0.0)
    weight_decay: float = option(0.0, "Adam weight decay (the reference passes none; the paper says 1e-4)", minimum=0.0)
    warmup_epochs: int = option(5, "warm-up epochs of the cosine schedule", minimum=0)
    warmup_lr: float = option(1e-5, "learning rate the warm-up starts from", minimum=0.0)
    min_lr: float = option(2e-6, "floor of the cosine schedule", minimum=0.0)
    loss: str = option("weighted", "weighted (exp(1-r) on positives, exp(r) on negatives) or bce",
                       choices=("weighted", "bce"))
    threshold: float = option(0.45, "an attribute is present when its probability is above this", above=0.0,
                              maximum=1.0)
    seed: int = option(0, "seed of initialisation, shuffling and frame sampling")
    val_fraction: float = option(0.0, "share of training persons held out to select the best epoch (0: select on "
                                 "the test split, as the reference does)", minimum=0.0, maximum=0.9)
    train_split: str = option("train", "split to train on")
    eval_split: str = option("test", "split evaluated after every epoch")
    precision: str = option("auto", "autocast: auto (bf16 on GPU, fp32 on CPU), fp32, bf16, fp16",
                            choices=("auto", *PRECISIONS))
    deterministic: str = option("auto", "deterministic kernels for the run: auto (on a CPU, where runs are then "
                                "bit-reproducible; off on a GPU, where they cost speed), on, off",
                                choices=("auto", "on", "off"), affects_results=False)
    workers: int | None = option(None, "loader processes (default: on a GPU its CPUs less 2, at most 16; on a CPU of "
                                 "up to 4 cores none, else 2)", minimum=0, affects_results=False)
    cache: str = option("disk", "where epochs read tokens: disk (the store, every batch), ram (the rows the run can "
                        "draw, loaded once with their checksums verified, then served from memory in this process), "
                        "auto (ram when they fit in the available memory with a 20% margin, else disk); results "
                        "are the same", choices=CACHE_TIERS, affects_results=False)
    device: str = option("cpu", "cpu, cuda or cuda:N", affects_results=False)
    fusion_compile: str = option("eager", "the fusion model's training forward and backward: eager, compile "
                                 "(torch.compile) or cudagraphs (torch.compile with CUDA graphs; CUDA only); losses "
                                 "stay within float tolerance of eager", choices=COMPILE_MODES, affects_results=False)
    log_to: list[str] = option([], "experiment trackers that also receive every epoch's figures (none by default; "
                               "each is an optional extra: pip install 'par[NAME]')", choices=tuple(TRACKERS),
                               affects_results=False)
    experiment: str = option(DEFAULT_EXPERIMENT, "MLflow experiment / W&B project of --log-to",
                             affects_results=False)

    @property
    def selection(self) -> str:
        """Which split picks the best epoch: the reference selects on the test split."""
        return "val" if self.val_fraction > 0 else "test"


@dataclass
class EvalConfig:
    store: str = option("", "token store", cli=False)
    checkpoint: str = option("", "run folder, best.json/last.json or .safetensors", cli=False)
    out: str | None = option(None, "output folder (default: RUN/eval-<split>, with -T<frames> / -random-s<seed> when "
                             "those differ from the run's)")
    frames: int | None = option(None, "T evaluation frames (default: the checkpoint's)", minimum=1)
    sampling: str | None = option(None, "fixed (evenly spaced, default) or random (the reference's test loader, keyed "
                                  "by --seed)", choices=("fixed", "random"))
    seed: int | None = option(None, "seed of random evaluation frames (default: the run's)")
    split: str = option("test", "split to evaluate; val: the training persons a run held out with --val-fraction "
                        "(par report tunes thresholds on it)")
    device: str = option("cpu", "cpu, cuda or cuda:N")
    workers: int | None = option(None, "loader processes (default as `par train`)", minimum=0)
    threshold: float | None = option(None, "an attribute is present above this (default: the checkpoint's, 0.45)",
                                     above=0.0, maximum=1.0)
    baseline: bool = option(False, "also score the majority-value baseline on the same split")


@dataclass
class PredictConfig:
    checkpoint: str = option("", "run folder, best.json/last.json or .safetensors; or a `par export` folder", cli=False)
    pretrained: str | None = option(None, "the CLIP weights file the checkpoint's store was built with")
    frames: int | None = option(None, "T evenly spaced frames (default: all frames)", minimum=1)
    json: str | None = option(None, "write the records as JSON to this file")
    csv: str | None = option(None, "write one row per tracklet to this CSV file")
    device: str = option("cpu", "cpu, cuda or cuda:N")
    batch_size: int = option(64, "frames per CLIP batch", minimum=1)
    workers: int = option(2, "JPEG decode workers", minimum=0)
    runtime: str = runtime_option()


@dataclass
class ExportConfig:
    checkpoint: str = option("", "run folder, best.json/last.json or .safetensors", cli=False)
    out: str = option("", "export folder to write: export.json, encoder.onnx (or encoder.int8.onnx), fusion.onnx",
                      cli=False)
    pretrained: str | None = option(None, "the CLIP weights file the checkpoint's store was built with")
    quantize: str = option("none", "int8: the encoder's matrix products in int8 (ONNX Runtime's dynamic quantisation, "
                           "an ONNX file for either runtime); int8-openvino: OpenVINO's static int8 (NNCF) calibrated "
                           "on the check manifest's crops, for --runtime openvino; the agreement with PyTorch is "
                           "measured and stated", choices=("none", "int8", "int8-openvino"))
    calibration_frames: int = option(64, "int8-openvino: crops of the check tracklets its activations are calibrated "
                                     "on", minimum=1)
    check_manifest: str | None = option(None, "manifest whose test tracklets check the export against PyTorch "
                                        "(default: the one the checkpoint's store was extracted from)")
    check_tracklets: int = option(32, "test tracklets the check runs on (0: all)", minimum=0)
    batch_size: int = option(16, "frames per CLIP batch of the check", minimum=1)


@dataclass
class SynthConfig:
    out: str = option("", "folder to create", cli=False)
    layout: str = option("mars", "dataset layout", choices=tuple(LAYOUTS))
    tracklets: int | None = option(None, "tracklets per split (default 40; with --like-*: all)", minimum=1)
    frames_per_tracklet: str = option("8", "frames per tracklet: N or MIN-MAX (not with --like-mars)")
    height: int | None = option(None, "frame height in pixels (default 256; --video: 360)", minimum=16)
    width: int | None = option(None, "frame width in pixels (default 128; --video: 640)", minimum=8)
    seed: int = option(0, "same seed, same bytes")
    like_mars: str | None = option(None, "folder with mars_attributes.csv and info/: real identities, labels and "
                                   "frame counts")
    like_duke: str | None = option(None, "folder with duke_attributes.csv: real identities and labels")
    workers: int = option(2, "render processes", minimum=1)
    video: bool = option(False, "render camera footage of people walking through instead (video.mp4, gt/gt.txt, "
                         "labels.csv)")
    people: int = option(5, "--video: people who walk through", minimum=1, maximum=500)
    seconds: float = option(20.0, "--video: length", above=0.0)
    fps: int = option(10, "--video: frames per second", minimum=1)
    cameras: int = option(1, "--video: cameras of a site the same people walk through (SITE/<camera>/ each, "
                          "site.json, the site's gt.txt)", minimum=1, maximum=16)


@dataclass
class BenchConfig:
    out: str = option("bench", "folder for bench.json and the work files")
    part: str = option("all", "all (extract,train,predict,sweep,deploy), or a comma-separated list of those, track, "
                       "link and grid")
    clip_model: str = option("ViT-B-16-quickgelu", "CLIP model of the extract and deploy parts (random weights: speed "
                             "does not depend on them)")
    fusion_model: str = option("vtf-par", "fusion model config of the train and deploy parts")
    deploy_seconds: float = option(2.0, "deploy part: seconds each runtime's rate is timed over (at least 3 batches)",
                                   above=0.0)
    deploy_detectors: list[str] = option(["torchvision:ssdlite320_mobilenet_v3_large"], "deploy part: person "
                                         "detectors timed on 640 x 360 frames (--detector values: torchvision:NAME "
                                         "with random weights, onnx:FILE, openvino:FILE)")
    device: str = option("cpu", "cpu, cuda or cuda:N")
    precision: str | None = option(None, "CLIP precision (default: fp16 on GPU, fp32 on CPU: CPU fp16 is an "
                                   "emulation, not a figure)", choices=PRECISIONS)
    batch_size: int = option(32, "frames per CLIP batch", minimum=1)
    workers: int = option(2, "JPEG decode workers", minimum=0)
    decode: str = option("pil", "JPEG decoding of the extract part", choices=("pil", "torchvision"))
    compile: bool = option(False, "torch.compile the image encoder in the extract part")
    train_workers: int | None = option(None, "training loader workers (default as `par train`)", minimum=0)
    tracklets: int = option(16, "synthetic tracklets per split", minimum=2)
    frames_per_tracklet: int = option(8, "frames per synthetic tracklet", minimum=1)
    train_batch: int = option(16, "tracklets per training batch", minimum=2)
    step_modes: str = option("eager", "how the train part's model-only step runs, each timed: eager, compile, "
                             "cudagraphs (separated by commas; scripts/gpu_check.sh times all three)")
    epochs: int = option(2, "epochs of the train part", minimum=1)
    sweep_epochs: int = option(2, "epochs of each sweep point", minimum=1)
    sweep_frames: list[int] = option([1, 2, 4, 6], "frame counts T of the sweep")
    host_frames: int = option(4096, "rows of the extraction host-loop measurement", minimum=1)
    grid_tracklets: list[int] = option([48, 48], "grid part: training and test tracklets of its MARS-shaped store "
                                       "(MARS: 8298 8062)")
    grid_frames: int = option(4, "grid part: frames kept per tracklet (evenly spaced, as --max-frames-per-tracklet)",
                              minimum=1)
    grid_dtype: str = option("float16", "grid part: the store's token dtype", choices=("float16", "int8"))
    grid_epochs: int = option(2, "grid part: epochs of every point (the paper: 20)", minimum=1)
    grid_seeds: int = option(1, "grid part: seeds of every (T, variant) (the paper's tables: 3)", minimum=1)
    grid_cache: str = option("auto", "grid part: --cache of the grid and of the points trained alone",
                             choices=CACHE_TIERS)
    grid_alone: int = option(8, "grid part: points of seed 0 also trained alone, as `par train` runs (the grid's "
                             "figure scales their mean to every point)", minimum=0)
    track_checkpoint: str | None = option(None, "track part: the run whose model names the attributes (default: the "
                                          "train part's)")
    track_seeds: int = option(3, "track part: synthetic scenes (seeds 0..N-1)", minimum=1)
    track_people: int = option(5, "track part: people per scene (and per minute of the memory videos)", minimum=1)
    track_seconds: float = option(20.0, "track part: length of each scene", above=0.0)
    track_minutes: list[float] = option([1.0, 10.0], "track part: the short and the long video of the memory "
                                        "measurement, in minutes (none: no memory measurement)")
    track_cameras: list[int] = option([1, 2, 3, 4, 6, 8], "track part: the camera counts a live run is tried with, "
                                      "in order, until one drops frames")
    link_cameras: list[int] = option([3, 6], "link part: the camera counts of the synthetic sites")
    link_seeds: int = option(3, "link part: sites of each camera count (seeds 0..N-1)", minimum=1)
    link_people: int = option(12, "link part: people per site", minimum=2)
    link_seconds: float = option(60.0, "link part: length of each site's videos", above=0.0)
    link_scale: int = option(10_000, "link part: tracks of the site that times the linker alone", minimum=2)

    @property
    def clip_precision(self) -> str:
        return self.precision or ("fp16" if self.device.startswith("cuda") else "fp32")


@dataclass
class ImportConfig:
    checkpoint: str = option("", "the reference checkpoint file (.pth)", cli=False)
    store: str = option("", "token store the checkpoint will be evaluated on", cli=False)
    out: str = option("", "run folder to write", cli=False)
    recipe: str = option(DEFAULT_RECIPE, "the recipe the checkpoint was trained with: the run records it, and its "
                         "threshold and evaluation frames apply")
    allow_other_clip: bool = option(False, "import onto a store whose CLIP is not OpenAI's ViT-B/16 (tests: the "
                                    "numbers then mean nothing)")


@dataclass
class TrackConfig:
    checkpoint: str = option("", "run folder, best.json/last.json or .safetensors; or a `par export` folder", cli=False)
    out: str = option("", "output folder: tracks.json, tracks.csv, tracks.txt, tracks.html", cli=False)
    pretrained: str | None = option(None, "the CLIP weights file the checkpoint's store was built with")
    detector: str = option("motion", "motion (background subtraction, fixed cameras, no weights), "
                           "torchvision:NAME (fasterrcnn_resnet50_fpn_v2, retinanet_resnet50_fpn_v2, "
                           "fcos_resnet50_fpn, ssdlite320_mobilenet_v3_large, ... with --detector-weights), or a "
                           "YOLO-family file as Ultralytics exports it: onnx:FILE (ONNX Runtime), openvino:FILE")
    detections: str | None = option(None, "use these detections instead of a detector: MOTChallenge rows "
                                    "frame,id,x,y,w,h,conf (det.txt, gt.txt)")
    detector_weights: str | None = option(None, "torchvision's COCO checkpoint of the --detector model (local file)")
    allow_random_detector: bool = option(False, "a torchvision detector with random weights: tests only")
    detector_threshold: float = option(0.5, "torchvision and file detectors: minimum person score", minimum=0.0,
                                       maximum=1.0)
    detector_iou: float = option(0.7, "file detectors ([B, 4+C, N] layout): IoU of non-maximum suppression "
                                 "(Ultralytics' default)", minimum=0.0, maximum=1.0)
    person_class: int = option(0, "file detectors: the person's class index (COCO's: 0)", minimum=0)
    motion_threshold: float = option(30.0, "motion detector: grey-level change that counts as moving", above=0.0)
    min_height: int = option(24, "smallest person box, in pixels of height", minimum=1)
    detector_batch: int = option(4, "frames per detector batch (torchvision)", minimum=1)
    activation: float = option(0.5, "ByteTrack: detection score that may start a track", minimum=0.0, maximum=1.0)
    high_confidence: float = option(0.6, "ByteTrack: score of the first association stage", minimum=0.0,
                                    maximum=1.0)
    match_iou: float = option(0.2, "ByteTrack: minimum IoU of a detection with a track's predicted box",
                              minimum=0.0, maximum=1.0)
    confirm_frames: int = option(2, "ByteTrack: consecutive matches before a track gets an id", minimum=1)
    lost_frames: int = option(30, "frames a lost track is kept for re-association before it is closed", minimum=0)
    min_track_frames: int = option(5, "tracks shorter than this are dropped (flickers, passers-by at the edge)",
                                   minimum=1)
    frames: int | None = option(None, "T evenly spaced frames of each track (default: the checkpoint's)", minimum=1)
    annotate: str | None = option(None, "write the video with boxes, ids and short labels to this .mp4 (H.264), "
                                  ".mov, .mkv, .webm (VP9) or .avi (MPEG-4 Part 2: browsers do not play it)")
    save_crops: str | None = option(None, "write every tracked box in the MARS layout + the predicted labels as a "
                                    "mars_attributes.csv to this folder (for `par manifest mars`)")
    crops_train: float = option(0.0, "--save-crops: the share of the people whose crops go to bbox_train (the rest to "
                                "bbox_test), spread evenly over the track ids: 0.5 makes a dataset to train and "
                                "evaluate on", minimum=0.0, maximum=1.0)
    device: str = option("cpu", "cpu, cuda or cuda:N")
    batch_size: int = option(32, "crops per CLIP batch", minimum=1)
    runtime: str = runtime_option()
    live: bool = option(False, "read files as live streams: one pass at their own rate (streams and capture devices "
                        "are always live); each person's record in tracks.jsonl as they leave")
    speed: float = option(1.0, "--live files: play at this many times their frame rate", above=0.0)
    keep_crops: int = option(16, "live: crops kept per open track, thinned evenly as it grows (at least T)",
                             minimum=1)
    update_every: float | None = option(None, "live: also write a provisional record of a track still in view "
                                        "every this many seconds", above=0.0)
    link: bool = option(False, "live, several cameras: give each record its person across the cameras as records "
                        "arrive (OUT/links.jsonl; par link's default rules)")
    alert_route: str | None = option(None, "with --link: alert when one person is seen in these cameras in this "
                                     "order, e.g. \"door > yard\" (several routes: comma-separated)")
    reconnect: int = option(5, "live: attempts to reconnect a stream that drops, with backoff", minimum=0)
    stream_timeout: float = option(5.0, "live: seconds a camera may take to answer, or a stream stay silent, before "
                                   "it counts as dropped", above=0.0)
    alerts: list[str] = option([], "attribute rules that raise an alert (recorded or live), in the condition grammar "
                               "of `par search`", cli=False)
    alert_webhook: str | None = option(None, "POST each alert event as JSON to this URL (recorded or live)")
    early_alerts: bool = option(False, "live: provisional records (--update-every) may fire an alert early; the "
                                "person's final record then confirms or retracts it")
    webhook_thumbnails: bool = option(False, "send the crops of the person (as data: URIs) in the webhook's body")
    webhook_retries: int = option(3, "retries of a POST that failed to connect or got 429/5xx (backoff 0.25, 0.5, 1 s, "
                                  "...; Retry-After honoured)", minimum=0)


@dataclass
class LinkConfig:
    out: str = option("", "folder to write", cli=False)
    threshold: float | None = option(None, "join tracks into one person while their similarity is at least this "
                                     "(default: data_manifests/linking/default.json)")
    max_gap: float | None = option(None, "most seconds from a person's sighting to their next one in another camera "
                                   "(default: data_manifests/linking/default.json)", above=0.0)
    same_camera_gap: float | None = option(None, "most seconds between a person's two sightings in one camera (a "
                                           "track the tracker lost and found again; default: "
                                           "data_manifests/linking/default.json)", minimum=0.0)
    transit: str | None = option(None, "CSV with columns from,to,min,max: each camera pair's transit seconds (a "
                                 "pair holds both ways unless the other way has its own row)")
    cues: str = option(",".join(CUES), f"what links tracks: {', '.join(CUES)} (a comma list)")
    weights: str | None = option(None, "each similarity cue's weight, e.g. appearance=1,colour=1,attributes=2 "
                                 "(default: data_manifests/linking/default.json)")


STAGES = {"extract": ExtractConfig, "train": TrainConfig}
COMMANDS = {**STAGES, "import": ImportConfig, "eval": EvalConfig, "predict": PredictConfig, "export": ExportConfig,
            "synth": SynthConfig,
            "bench": BenchConfig, "track": TrackConfig, "link": LinkConfig}


def load_recipe(name_or_path: str) -> dict[str, Any]:
    recipe = load_json("recipes", name_or_path)
    for section, cls in STAGES.items():
        for key, value in recipe.get(section, {}).items():
            coerce(cls, key, value, f"recipe {recipe.get('name', name_or_path)}")
    return recipe


def build_config(command: str, layers: list[tuple[str, Mapping[str, Any]]]) -> Any:
    """The config of a command without a recipe (eval, predict, synth, bench): defaults < each (where, values) layer."""
    return build(COMMANDS[command], layers)


def configure(stage: str, recipe_name: str | None, layers: list[tuple[str, Mapping[str, Any]]]) -> tuple[Any, dict]:
    """(config, recipe record) for a stage: defaults < recipe < each (where, values) layer. The record names the
    recipe and the overrides: every option set by a later layer to a value other than the recipe's."""
    cls = STAGES[stage]
    name = recipe_name or DEFAULT_RECIPE
    recipe = load_recipe(name)
    from_recipe = {**recipe.get(stage, {}), "recipe": recipe["name"]}
    cfg = build(cls, [(f"recipe {recipe['name']}", from_recipe), *layers])
    base = as_dict(build(cls, [(f"recipe {recipe['name']}", from_recipe)]))
    ours = as_dict(cfg)
    counted = set(results_keys(cls)) - {"recipe"}
    overrides = {k: ours[k] for k in ours if ours[k] != base[k] and k in counted}
    return cfg, {"name": recipe["name"], "overrides": overrides}


def check_device(device: str) -> None:
    """A CUDA device asked for on a machine without one is an error, not a slow CPU run."""
    import torch

    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ParError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
        index = device.partition(":")[2]
        if index and (not index.isdigit() or int(index) >= torch.cuda.device_count()):
            raise ParError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif device != "cpu":
        raise ParError(f"--device must be cpu, cuda or cuda:N, not '{device}'")
