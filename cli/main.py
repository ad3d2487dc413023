"""The `par` command line: parses options, calls par_pipeline, renders with rich."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from par_pipeline.errors import ParError

from .ui import console, err_console, kv_table, progress_bar

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Video pedestrian attribute recognition (VTF-PAR) on precomputed CLIP tokens.")
manifest_app = typer.Typer(no_args_is_help=True, help="Build a manifest from a dataset layout.")
app.add_typer(manifest_app, name="manifest")


def _manifest(layout: str, root: Path, out: Path, attributes: Optional[Path], schema: Optional[str]) -> None:
    from par_pipeline.layouts import LAYOUTS
    from par_pipeline.manifest import write_manifest
    from par_pipeline.schema import load_schema

    manifest, summary = LAYOUTS[layout](root, load_schema(schema or layout), attributes)
    if not manifest.records:
        raise ParError(f"{root}: no labelled tracklets found; check the dataset root and the attribute CSV")
    write_manifest(manifest, out)
    t = Table(title=f"{layout} manifest -> {out}", title_justify="left")
    for col in ("split", "tracklets", "frames"):
        t.add_column(col, justify="right" if col != "split" else "left")
    for split in ("train", "test"):
        t.add_row(split, f"{summary.tracklets.get(split, 0):,}", f"{summary.frames.get(split, 0):,}")
    console.print(t)
    console.print(kv_table("checks", [
        ("labelled tracklets without frames", len(summary.labelled_without_frames)),
        ("tracklets with frames but no labels", len(summary.unlabelled_tracklets)),
        ("empty tracklets", len(summary.empty_tracklets)),
    ]))


@manifest_app.command("mars")
def manifest_mars(root: Path = typer.Argument(..., help="MARS root holding bbox_train/ and bbox_test/"),
                  out: Path = typer.Option(..., "--out", "-o", help="manifest to write (JSON Lines)"),
                  attributes: Optional[Path] = typer.Option(None, help="mars_attributes.csv (default: found in ROOT)"),
                  schema: Optional[str] = typer.Option(None, help="attribute schema name or JSON (default: mars)")) -> None:
    """MARS layout + MARS-Attribute CSV -> manifest."""
    _manifest("mars", root, out, attributes, schema)


@manifest_app.command("duke")
def manifest_duke(root: Path = typer.Argument(..., help="DukeMTMC-VideoReID root holding train/, gallery/, query/"),
                  out: Path = typer.Option(..., "--out", "-o", help="manifest to write (JSON Lines)"),
                  attributes: Optional[Path] = typer.Option(None, help="duke_attributes.csv (default: found in ROOT)"),
                  schema: Optional[str] = typer.Option(None, help="attribute schema name or JSON (default: duke)")) -> None:
    """DukeMTMC-VID layout + attribute CSV -> manifest."""
    _manifest("duke", root, out, attributes, schema)


@app.command()
def synth(out: Path = typer.Argument(..., help="folder to create (MARS layout)"),
          tracklets_per_split: Optional[int] = typer.Option(None, "--tracklets", help="tracklets per split (default 40; with --like-mars: all)"),
          frames: str = typer.Option("8", help="frames per tracklet: N or MIN-MAX (ignored with --like-mars)"),
          height: int = typer.Option(256), width: int = typer.Option(128),
          seed: int = typer.Option(0, help="same seed, same bytes"),
          like_mars: Optional[Path] = typer.Option(None, help="folder with mars_attributes.csv and info/: real identities, labels and frame counts"),
          workers: int = typer.Option(2, help="render processes")) -> None:
    """Write a MARS-shaped synthetic dataset whose frames show their attributes."""
    from par_pipeline.synth import plan_like_mars, plan_random, write_synth

    if like_mars is not None:
        plan = plan_like_mars(like_mars, tracklets_per_split, seed)
    else:
        lo, _, hi = frames.partition("-")
        try:
            span = (int(lo), int(hi or lo))
        except ValueError:
            raise ParError(f"--frames must be N or MIN-MAX, not '{frames}'") from None
        if span[0] < 1 or span[1] < span[0]:
            raise ParError(f"--frames {frames}: need 1 <= MIN <= MAX")
        plan = plan_random(40 if tracklets_per_split is None else tracklets_per_split, span, seed)
    total = sum(t.num_frames for t in plan)
    done = 0
    with progress_bar("synth", total, "frames") as update:
        def step(n: int) -> None:
            nonlocal done
            done += n
            update(done)
        write_synth(out, plan, height, width, workers, step)
    console.print(f"wrote {len(plan):,} tracklets, {total:,} frames to {out}")


@app.command()
def extract(manifest: Path = typer.Argument(..., help="manifest from `par manifest`"),
            out: str = typer.Option(..., "--out", "-o", help="store path: zarr folder/URL, or a .h5 file"),
            model: str = typer.Option("ViT-B-16", help="open_clip model name (par-tiny-clip for tests)"),
            pretrained: Optional[str] = typer.Option(None, help="open_clip tag (e.g. openai) or a local checkpoint file"),
            allow_random_init: bool = typer.Option(False, help="random CLIP weights: tests and the demo only"),
            fmt: Optional[str] = typer.Option(None, "--format", help="zarr or h5 (default: from --out's suffix)"),
            dtype: str = typer.Option("float16", help="float16 or float32"),
            batch_size: int = typer.Option(64), shard_frames: int = typer.Option(64, help="frames per zarr shard"),
            workers: int = typer.Option(2, help="JPEG decode workers"),
            device: str = typer.Option("cpu", help="cpu, cuda, cuda:N"),
            precision: str = typer.Option("auto", help="auto (bf16/fp16 on GPU, fp32 on CPU), fp32, fp16, bf16"),
            prompt_template: Optional[str] = typer.Option(None, help="e.g. 'the pedestrian has an attribute {phrase}'"),
            max_frames_per_tracklet: Optional[int] = typer.Option(None, help="keep K evenly spaced frames per tracklet"),
            on_bad_frame: str = typer.Option("error", help="error or skip"),
            seed: int = typer.Option(0, help="seed of random CLIP weights")) -> None:
    """Stage one: frozen CLIP over every frame, once, into a token store (resumable)."""
    from par_pipeline.distributed import DistContext
    from par_pipeline.extract import ExtractConfig, extract as run_extract
    from par_pipeline.manifest import read_manifest

    m = read_manifest(manifest)
    dist = DistContext.from_env()
    if fmt is None and not out.endswith((".h5", ".hdf5")):
        fmt = "zarr"
    if fmt == "h5" and not out.endswith((".h5", ".hdf5")):
        raise ParError(f"{out}: an HDF5 store needs a .h5 or .hdf5 file name")
    cfg = ExtractConfig(out=out, model=model, pretrained=pretrained, allow_random_init=allow_random_init, fmt=fmt,
                        dtype=dtype, batch_size=batch_size, shard_frames=shard_frames, workers=workers,
                        device=dist.device(device), precision=precision, prompt_template=prompt_template,
                        max_frames_per_tracklet=max_frames_per_tracklet, on_bad_frame=on_bad_frame, seed=seed)
    if dist.is_main:
        with progress_bar("extract", None, "frames") as update:
            res = run_extract(m, cfg, dist, update)
    else:
        res = run_extract(m, cfg, dist)
    dist.shutdown()
    if dist.is_main:
        if res.already_complete:
            console.print(f"{out}: already complete ({res.frames:,} frames); nothing to do")
        else:
            console.print(kv_table(f"token store {out}", [("tracklets", f"{res.tracklets:,}"), ("frames", f"{res.frames:,}"),
                                                             ("encoded now", f"{res.encoded_frames:,}"),
                                                             ("resumed from shards", res.resumed_shards),
                                                             ("skipped bad frames", len(res.skipped))]))
            for path in res.skipped[:20]:
                console.print(f"  skipped {path}")


def _merge_options(config: Optional[Path], given: dict) -> dict:
    """Defaults < config file (JSON of TrainConfig keys) < options given on the command line."""
    import json

    merged: dict = {}
    if config is not None:
        if not config.is_file():
            raise ParError(f"{config}: config file not found")
        try:
            merged.update(json.loads(config.read_text()))
        except json.JSONDecodeError as exc:
            raise ParError(f"{config}: not valid JSON ({exc})") from None
    merged.update({k: v for k, v in given.items() if v is not None})
    return merged


@app.command()
def train(store: Optional[str] = typer.Argument(None, help="token store from `par extract`"),
          out: Optional[str] = typer.Option(None, "--out", "-o", help="run folder (default runs/vtf-par)"),
          config: Optional[Path] = typer.Option(None, help="JSON file of training options (command line wins)"),
          model: Optional[str] = typer.Option(None, help="model config name or JSON (vtf-par, vtf-par-small)"),
          fusion: Optional[bool] = typer.Option(None, "--fusion/--no-fusion", help="--no-fusion: the paper's w/o FusionFormer"),
          text_tokens: Optional[bool] = typer.Option(None, "--text-tokens/--no-text-tokens", help="CLIP text tokens or learned queries"),
          text_source: Optional[str] = typer.Option(None, help="prompts (default) or phrases (prompt template off)"),
          depth: Optional[int] = typer.Option(None, help="fusion blocks (paper: 1)"),
          fusion_init: Optional[str] = typer.Option(None, help="timm ViT-B/16 checkpoint: its last block initialises the fusion"),
          frames: Optional[int] = typer.Option(None, help="T frames per tracklet (paper: 6)"),
          eval_frames: Optional[int] = typer.Option(None, help="T for evaluation (default: --frames)"),
          epochs: Optional[int] = typer.Option(None), batch_size: Optional[int] = typer.Option(None),
          lr: Optional[float] = typer.Option(None), weight_decay: Optional[float] = typer.Option(None),
          warmup_epochs: Optional[int] = typer.Option(None), loss: Optional[str] = typer.Option(None, help="weighted or bce"),
          seed: Optional[int] = typer.Option(None), workers: Optional[int] = typer.Option(None, help="loader workers (default: 0 on a CPU of up to 4 cores, else 2; on a GPU its CPUs less 2, at most 16)"),
          device: Optional[str] = typer.Option(None), amp: Optional[str] = typer.Option(None, help="auto, off, bf16, fp16"),
          resume: bool = typer.Option(False, help="continue the run in --out from its last epoch")) -> None:
    """Stage two: train the fusion Transformer and heads from a token store."""
    from rich.live import Live

    from par_pipeline.distributed import DistContext
    from par_pipeline.train import TrainConfig, train as run_train

    opts = dict(store=store, out=out, model=model, fusion=fusion, text_tokens=text_tokens, text_source=text_source,
                depth=depth, fusion_init=fusion_init, frames=frames, eval_frames=eval_frames, epochs=epochs,
                batch_size=batch_size, lr=lr, weight_decay=weight_decay, warmup_epochs=warmup_epochs, loss=loss, seed=seed,
                workers=workers, device=device, amp=amp)
    cfg = TrainConfig.from_dict(_merge_options(config, opts))
    if not cfg.store:
        raise ParError("no token store given: `par train STORE` (or 'store' in --config)")
    dist = DistContext.from_env()
    cfg.device = dist.device(cfg.device)
    table = Table(title=f"training {cfg.out}", title_justify="left")
    for col in ("epoch", "loss", "lr", "P", "R", "F1", "mA"):
        table.add_column(col, justify="right")

    def on_epoch(r: dict) -> None:
        table.add_row(f"{r['epoch']}/{cfg.epochs}", f"{r['loss']:.4f}", f"{r['lr']:.2e}", f"{100 * r['precision']:.2f}",
                      f"{100 * r['recall']:.2f}", f"{100 * r['f1']:.2f}", f"{100 * r['mA']:.2f}")

    if dist.is_main:
        with Live(table, console=console, refresh_per_second=2):
            best = run_train(cfg, resume, dist, on_epoch)
        console.print(f"best F1 {100 * best['f1']:.2f} at epoch {best['epoch']}; checkpoints in {cfg.out}/ (best.json, last.json)")
    else:
        run_train(cfg, resume, dist)
    dist.shutdown()


@app.command("eval")
def eval_cmd(store: str = typer.Argument(..., help="token store"),
             checkpoint: str = typer.Option(..., help="run folder, best.json/last.json or .safetensors"),
             out: Optional[str] = typer.Option(None, "--out", "-o", help="output folder (default: RUN/eval-<split>[-T<frames>])"),
             frames: Optional[int] = typer.Option(None, help="T evaluation frames (default: the checkpoint's)"),
             split: str = typer.Option("test"), device: str = typer.Option("cpu"), workers: int = typer.Option(2),
             threshold: Optional[float] = typer.Option(None, help="default: the checkpoint's (0.45)"),
             baseline: bool = typer.Option(False, help="also print the majority-value baseline on the same split")) -> None:
    """Evaluate a checkpoint with the paper's protocol; writes metrics.json, groups.md/csv, predictions.npz."""
    from par_pipeline.checkpoint import resolve_checkpoint
    from par_pipeline.evaluate import evaluate_checkpoint

    ckpt = resolve_checkpoint(checkpoint)
    out = out or str(ckpt.parent / (f"eval-{split}" + (f"-T{frames}" if frames else "")))
    metrics = evaluate_checkpoint(store, checkpoint, out, frames, split, device, workers, threshold)
    render_group_table(metrics, f"{split} split, T={metrics['frames']}, threshold {metrics['threshold']}")
    if baseline:
        from par_pipeline.metrics import evaluate_predictions, majority_baseline
        from par_pipeline.store import TokenStore

        st = TokenStore(store)
        tr, te = st.indices("train"), st.indices(split)
        base = evaluate_predictions(majority_baseline(st.labels[tr], st.labels[te], st.attrs["group_boundaries"]),
                                    st.labels[te], st.attrs["group_boundaries"], st.attrs["groups"], metrics["threshold"])
        m, b = metrics["protocol"]["mean"], base["protocol"]["mean"]
        console.print(f"[bold]model F1 {100 * m['f1']:.2f} (mA {100 * m['mA']:.2f}) vs majority-value baseline "
                      f"F1 {100 * b['f1']:.2f} (mA {100 * b['mA']:.2f})[/]")
    console.print(f"wrote {out}/metrics.json, groups.md, groups.csv, predictions.npz")


def render_group_table(metrics: dict, title: str) -> None:
    from par_pipeline.report import GROUP_HEADER, group_rows

    t = Table(title=title, title_justify="left")
    for i, col in enumerate(GROUP_HEADER):
        t.add_column(col, justify="left" if i == 0 else "right")
    rows = group_rows(metrics)
    for row in rows[:-1]:
        t.add_row(*row)
    t.add_row(*rows[-1], style="bold")
    console.print(t)
    s = metrics["standard"]
    console.print(f"standard: label mA {100 * s['label_mA']:.2f} | instance acc {100 * s['instance_accuracy']:.2f} "
                  f"P {100 * s['instance_precision']:.2f} R {100 * s['instance_recall']:.2f} F1 {100 * s['instance_f1']:.2f}")


@app.command()
def bench(out: Path = typer.Option(Path("bench"), "--out", "-o", help="folder for bench.json and the work files"),
          part: str = typer.Option("all", help="all, or a comma-separated subset of extract,train,predict,sweep"),
          model: str = typer.Option("ViT-B-16", help="CLIP model for the extract part (random weights: speed only)"),
          pretrained: Optional[str] = typer.Option(None, help="real weights, optional: throughput does not depend on them"),
          fusion_model: str = typer.Option("vtf-par", help="fusion model config for the train part"),
          device: str = typer.Option("cpu"), precision: str = typer.Option("auto"),
          batch_size: int = typer.Option(32), workers: int = typer.Option(2, help="JPEG decode workers (extract, predict)"),
          train_workers: Optional[int] = typer.Option(None, help="training loader workers (default as `par train`)"),
          tracklets: int = typer.Option(16, help="synthetic tracklets per split"),
          frames: int = typer.Option(8, help="frames per synthetic tracklet"),
          train_batch: int = typer.Option(16), epochs: int = typer.Option(2),
          sweep_epochs: int = typer.Option(2), sweep_frames: str = typer.Option("1 2 4 6")) -> None:
    """Throughput benchmarks (pipeline vs model-only, store bytes, train from store, sweep speedup); writes bench.json."""
    import platform

    from par_pipeline.atomic import write_json_atomic
    from par_pipeline import bench as B

    out.mkdir(parents=True, exist_ok=True)
    results: dict = {"machine": {"platform": platform.platform(), "cpus": __import__("os").cpu_count(),
                                 "torch": __import__("torch").__version__,
                                 "gpu": __import__("torch").cuda.get_device_name(0) if device.startswith("cuda") else None}}
    log = lambda msg: console.print(f"[dim]{msg}[/]")  # noqa: E731
    parts = {"extract", "train", "predict", "sweep"} if part == "all" else set(part.split(","))
    if part not in ("all",) and not parts <= {"extract", "train", "predict", "sweep"}:
        raise ParError(f"--part must be all or a comma-separated subset of extract,train,predict,sweep, not '{part}'")
    if "extract" in parts:
        results["extract"] = B.bench_extract(out, model, device, precision, batch_size, workers, tracklets, frames, pretrained, log)
    if "train" in parts:
        store = out / "store.zarr"
        if not store.exists():
            raise ParError(f"{store}: run the extract part first (`par bench --part extract --out {out}`)")
        results["train"] = B.bench_train(store, out, fusion_model, device, epochs, train_batch, train_workers, log)
    if "predict" in parts:
        if not (out / "bench-run" / "best.json").exists():
            raise ParError(f"{out}/bench-run: run the train part first (`par bench --part train --out {out}`)")
        results["predict"] = B.bench_predict(out, device, batch_size, workers, log)
    if "sweep" in parts:
        if "extract" not in results:
            raise ParError("the sweep part reuses the extract part's store and timing: run --part all or extract,sweep")
        results["sweep"] = B.bench_sweep(out, results["extract"]["extract_s"], fusion_model, device,
                                         [int(t) for t in sweep_frames.split()], sweep_epochs, train_batch, log)
    write_json_atomic(out / "bench.json", results)
    where = results["machine"]["gpu"] or f"{results['machine']['cpus']} CPU cores"
    t = Table(title=f"benchmark ({where})", title_justify="left")
    t.add_column("measure")
    t.add_column("value", justify="right")
    t.add_column("target", justify="right")
    if "extract" in results:
        e = results["extract"]
        t.add_row(f"extract model-only ({e['model']}, batch {e['batch_size']})", f"{e['model_only_fps']:,.1f} frames/s", "")
        t.add_row(f"extract pipeline ({e['workers']} decode workers)", f"{e['pipeline_fps']:,.1f} frames/s", "")
        t.add_row("pipeline / model-only", f"{e['pipeline_over_model']:.3f}", ">= 0.9")
        t.add_row("bytes per frame / raw floor 2*N*D", f"{e['bytes_per_frame']:,.0f} / {e['raw_floor_bytes']:,} = {e['bytes_over_floor']:.4f}", "<= 1.02")
        t.add_row("chunks / shards", f"{e['chunks']} / {e['shards']}", "")
        t.add_row("random read of T=6 frames", f"{e['random_read_ms_T6']:.2f} ms", "")
        h = e["host_loop"]
        for name in ("direct", "zarr"):
            t.add_row(f"extract host loop, CLIP+decode stubbed, {name} writes",
                      f"{h[name]['frames_per_s']:,.0f} frames/s ({h[name]['user_ms_per_frame']:.3f} ms user CPU/frame)", "")
    if "train" in results:
        r = results["train"]
        t.add_row(f"train model-only ({r['model']}, batch {r['batch_size']})", f"{r['model_only_samples_per_s']:,.1f} samples/s", "")
        t.add_row(f"train loader alone ({r['workers']} workers, no model)", f"{r['loader_alone_samples_per_s']:,.1f} samples/s", "")
        t.add_row("train from store", f"{r['store_samples_per_s']:,.1f} samples/s", "")
        t.add_row("store / model-only", f"{r['store_over_model']:.3f}", ">= 0.9")
    if "predict" in results:
        p = results["predict"]
        t.add_row(f"predict ({p['tracklets']} tracklets, all {p['frames']} frames)", f"{p['tracklets_per_s']:,.2f} tracklets/s", "")
    if "sweep" in results:
        w = results["sweep"]
        t.add_row(f"sweep T={w['frames']} x {w['epochs']} epochs: ours (extract once + train)", f"{w['ours_total_s']:.1f} s", "")
        t.add_row("sweep the reference way (CLIP every step)", f"{w['reference_total_s']:.1f} s", "")
        t.add_row(f"sweep speedup, measured ({w['epochs']} epoch(s))", f"{w['speedup']:.2f}x", "")
        t.add_row(f"sweep speedup, projected to {w['projected_epochs']} epochs", f"{w['projected_speedup']:.1f}x", "")
    console.print(t)
    console.print(f"wrote {out}/bench.json")


@app.command()
def ablation(store: str = typer.Argument(..., help="ONE token store; every point trains from it"),
             out: Path = typer.Option(Path("results"), "--out", "-o"),
             frames: str = typer.Option("1 2 4 6", help="frame counts T, space-separated"),
             variants: str = typer.Option("fusion no-fusion", help="from data_manifests/ablation/variants.json"),
             seeds: int = typer.Option(1, help="repeat each point; mean and std are reported"),
             epochs: int = typer.Option(20), model: str = typer.Option("vtf-par"), batch_size: int = typer.Option(16),
             warmup_epochs: Optional[int] = typer.Option(None),
             workers: Optional[int] = typer.Option(None, help="loader workers (default: 0 on a CPU of up to 4 cores, else 2; on a GPU its CPUs less 2, at most 16)"),
             device: str = typer.Option("cpu")) -> None:
    """Frame-count sweep and component ablation: ablation.json/.csv/.md and ablation.png."""
    from rich.progress import Progress

    from par_pipeline.ablation import run_ablation


    base = {"epochs": epochs, "model": model, "batch_size": batch_size, "workers": workers, "device": device,
            "warmup_epochs": min(5, epochs // 4) if warmup_epochs is None else warmup_epochs}
    try:
        frame_list = [int(t) for t in frames.split()]
    except ValueError:
        raise ParError(f"--frames must be integers separated by spaces, not '{frames}'") from None
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("ETA"), TimeRemainingColumn(), console=console) as progress:
        sweep = progress.add_task("sweep", total=None)
        run = progress.add_task("run", total=epochs)

        def on_point(i: int, n: int, p, reused: bool) -> None:
            progress.update(sweep, total=n, completed=i, description=f"sweep (run {i + 1}/{n})")
            progress.reset(run, total=epochs, description=f"{p.variant} T={p.frames} seed {p.seed}" + (" (reused)" if reused else ""))

        def on_epoch(r: dict) -> None:
            progress.update(run, completed=r["epoch"], description=f"{progress.tasks[run].description.split(' F1')[0]} F1 {100 * r['f1']:.1f}")

        rows = run_ablation(store, out, frame_list, variants.split(), seeds, base, on_point, on_epoch)
        progress.update(sweep, completed=progress.tasks[sweep].total)
    t = Table(title=f"ablation ({epochs} epochs, {seeds} seed(s))", title_justify="left")
    for col in ("variant", "T", "P", "R", "F1", "mA"):
        t.add_column(col, justify="left" if col == "variant" else "right")
    for r in rows:
        cells = [f"{100 * r[k]:.2f}" + (f" ± {100 * r[k + '_std']:.2f}" if seeds > 1 else "") for k in ("precision", "recall", "f1", "mA")]
        t.add_row(r["variant"], str(r["frames"]), *cells)
    console.print(t)
    console.print(f"wrote {out}/ablation.json, ablation.csv, ablation.md, ablation.png")


@app.command()
def report(runs: list[Path] = typer.Argument(..., help="run folders (from par train) or eval folders (metrics.json)"),
           out: Path = typer.Option(Path("report"), "--out", "-o")) -> None:
    """Several runs side by side: report.md (means and the per-group F1 table of the paper's Table 2) and report.png."""
    from par_pipeline.report import compare_runs

    md = compare_runs(runs, out)
    console.print(md)
    console.print(f"wrote {out}/report.md, report.png")


@app.command()
def predict(inputs: list[Path] = typer.Argument(None, help="frame folders (one person each, or a folder of them) and/or video files"),
            checkpoint: str = typer.Option(..., help="run folder, best.json/last.json or .safetensors"),
            pretrained: Optional[str] = typer.Option(None, help="the CLIP weights file the checkpoint's store was built with"),
            mars_root: Optional[Path] = typer.Option(None, help="MARS root, with --tracklet"),
            tracklet: list[str] = typer.Option([], help="MARS tracklet id (repeatable), e.g. 0001C1T0001"),
            frames: Optional[int] = typer.Option(None, help="T evenly spaced frames (default: all frames)"),
            json_out: Optional[Path] = typer.Option(None, "--json", help="write one record per tracklet (JSON list)"),
            csv_out: Optional[Path] = typer.Option(None, "--csv", help="write one row per tracklet"),
            device: str = typer.Option("cpu"), batch_size: int = typer.Option(64),
            workers: int = typer.Option(2, help="JPEG decode workers")) -> None:
    """Attributes of new tracklets and videos: probabilities and a decoded description per group."""

    from par_pipeline.atomic import write_json_atomic, write_text_atomic
    from par_pipeline.predict import collect_inputs, predict as run_predict
    from par_pipeline.report import csv_text

    items = collect_inputs(inputs or [], mars_root, tracklet)
    with progress_bar("predict", None, "frames") as update:
        records = run_predict(items, checkpoint, pretrained, device, frames, batch_size, update, workers)
    groups = list(records[0]["description"])
    shown = records[:6]  # one column per tracklet; --json / --csv hold every record
    t = Table(title=f"predicted attributes ({len(records)} tracklet(s){', first 6 shown' if len(records) > 6 else ''})",
              title_justify="left")
    t.add_column("group")
    for r in shown:
        t.add_column(f"{r['tracklet']} ({r['frames']} frames)")
    for g in groups:
        t.add_row(g, *(f"{r['description'][g]} ({r['confidence'][g]:.2f})" for r in shown))
    console.print(t)
    if json_out:
        write_json_atomic(json_out, records)
    if csv_out:
        attrs = list(records[0]["probabilities"])
        rows = [[r["tracklet"], r["frames"], *(r["description"][g] for g in groups),
                 *(f"{r['probabilities'][a]:.4f}" for a in attrs)] for r in records]
        write_text_atomic(csv_out, csv_text(["tracklet", "frames", *groups, *(f"p({a})" for a in attrs)], rows))


def main() -> None:
    try:
        app()
    except ParError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]; re-run the same command to resume", highlight=False)
        sys.exit(130)


if __name__ == "__main__":
    main()
