"""The `par` command line: parses options, calls par_pipeline.workflows, renders with rich."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table

from par_pipeline.config import ExtractConfig, TrainConfig, configure
from par_pipeline.data.layouts import ATTRIBUTE_CSV, LAYOUT_FOLDERS, LAYOUT_TITLES, LAYOUTS
from par_pipeline.errors import ParError, one_line

from .options import command_with_config, parameter, read_config_file
from .ui import console, err_console, kv_table, progress_bar

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Video pedestrian attribute recognition (VTF-PAR) on precomputed CLIP tokens.")
manifest_app = typer.Typer(no_args_is_help=True, help="Build a manifest from a dataset layout.")
app.add_typer(manifest_app, name="manifest")


def _manifest(layout: str, root: Path, out: Path, attributes: Optional[Path], schema: Optional[str]) -> None:
    from par_pipeline.workflows.manifest import make_manifest

    _, summary = make_manifest(layout, root, out, attributes, schema)
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


def _add_manifest_command(layout: str) -> None:
    """`par manifest LAYOUT ROOT --out F`, one command per dataset layout."""
    def command(root: Path = typer.Argument(..., help=f"{LAYOUT_TITLES[layout]} root holding {LAYOUT_FOLDERS[layout]}"),
                out: Path = typer.Option(..., "--out", "-o", help="manifest to write (JSON Lines)"),
                attributes: Optional[Path] = typer.Option(None, help=f"{ATTRIBUTE_CSV[layout]} (default: found in ROOT)"),
                schema: Optional[str] = typer.Option(None, help=f"attribute schema name or JSON (default: {layout})")) -> None:
        _manifest(layout, root, out, attributes, schema)

    command.__doc__ = f"{LAYOUT_TITLES[layout]} layout + {ATTRIBUTE_CSV[layout]} -> manifest."
    manifest_app.command(layout)(command)


for _layout in LAYOUTS:
    _add_manifest_command(_layout)


def _span(text: str) -> tuple[int, int]:
    lo, _, hi = text.partition("-")
    try:
        return int(lo), int(hi or lo)
    except ValueError:
        raise ParError(f"--frames-per-tracklet must be N or MIN-MAX, not '{text}'") from None


@app.command()
def synth(out: Path = typer.Argument(..., help="folder to create"),
          layout: str = typer.Option("mars", help="mars or duke"),
          tracklets: Optional[int] = typer.Option(None, help="tracklets per split (default 40; with --like-*: all)"),
          frames_per_tracklet: str = typer.Option("8", help="frames per tracklet: N or MIN-MAX (not with --like-mars)"),
          height: int = typer.Option(256), width: int = typer.Option(128),
          seed: int = typer.Option(0, help="same seed, same bytes"),
          like_mars: Optional[Path] = typer.Option(None, help="folder with mars_attributes.csv and info/: real "
                                                   "identities, labels and frame counts"),
          like_duke: Optional[Path] = typer.Option(None, help="folder with duke_attributes.csv: real identities and labels"),
          workers: int = typer.Option(2, help="render processes")) -> None:
    """Write a synthetic MARS- or Duke-shaped dataset whose frames show their attributes."""
    from par_pipeline.tools.synth import plan_like_duke, plan_like_mars, plan_random, write_synth

    if like_mars is not None:
        layout, plan = "mars", plan_like_mars(like_mars, tracklets, seed)
    elif like_duke is not None:
        layout, plan = "duke", plan_like_duke(like_duke, tracklets, _span(frames_per_tracklet), seed)
    else:
        plan = plan_random(layout, 40 if tracklets is None else tracklets, _span(frames_per_tracklet), seed)
    total = sum(t.num_frames for t in plan)
    done = 0
    with progress_bar("synth", total, "frames") as update:
        def step(n: int) -> None:
            nonlocal done
            done += n
            update(done)
        write_synth(out, plan, layout, height, width, workers, step)
    console.print(f"wrote {len(plan):,} tracklets, {total:,} frames to {out} ({layout} layout)")


def _stage_config(stage: str, own: dict[str, Any], given: dict[str, Any], extra: dict[str, Any]) -> tuple[Any, dict]:
    layers = [(f"--config {own['config']}", read_config_file(own["config"]))] if own.get("config") else []
    return configure(stage, own.get("recipe"), [*layers, ("the command line", {**given, **extra})])


RECIPE = parameter("recipe", typer.Option(None, help="recipe of the defaults: vtf-par-official (default), "
                                                   "vtf-par-paper, or a recipe JSON"), Optional[str])
CONFIG = parameter("config", typer.Option(None, help="JSON file of options (the command line wins)"), Optional[Path])


def _extract(own: dict[str, Any], given: dict[str, Any]) -> None:
    from par_pipeline.data.manifest import read_manifest
    from par_pipeline.distributed import DistContext
    from par_pipeline.workflows.extract import extract

    manifest = read_manifest(own["manifest"])
    dist = DistContext.from_env()
    cfg, recipe = _stage_config("extract", own, given, {"out": own["out"]})
    cfg.device = dist.device(cfg.device)
    if dist.is_main:
        with progress_bar("extract", None, "frames") as update:
            res = extract(manifest, cfg, recipe, dist, update)
    else:
        res = extract(manifest, cfg, recipe, dist)
    dist.shutdown()
    if not dist.is_main:
        return
    if res.already_complete:
        console.print(f"{cfg.out}: already complete ({res.rows:,} rows); nothing to do")
        return
    console.print(kv_table(f"token store {cfg.out}", [
        ("recipe", f"{recipe['name']}" + (f" (overrides: {recipe['overrides']})" if recipe["overrides"] else "")),
        ("tracklets", f"{res.tracklets:,}"), ("rows (frames x views)", f"{res.rows:,}"),
        ("encoded now", f"{res.encoded_rows:,}"), ("resumed from shards", res.resumed_shards),
        ("skipped bad frames", len(res.skipped))]))
    for path in res.skipped[:20]:
        console.print(f"  skipped {path}")


command_with_config(app, "extract", ExtractConfig, [
    parameter("manifest", typer.Argument(..., help="manifest from `par manifest`"), Path),
    parameter("out", typer.Option(..., "--out", "-o", help="store path: a zarr folder, or a .h5/.hdf5 file"), str),
    RECIPE, CONFIG,
], _extract, "Stage one: frozen CLIP over every frame, once, into a checksummed token store (resumable).")


def _train(own: dict[str, Any], given: dict[str, Any]) -> None:
    from rich.live import Live

    from par_pipeline.distributed import DistContext
    from par_pipeline.workflows.train import train

    extra = {"store": own["store"]} if own["store"] else {}
    cfg, recipe = _stage_config("train", own, given, extra)
    if not cfg.store:
        raise ParError("no token store given: `par train STORE` (or 'store' in --config)")
    dist = DistContext.from_env()
    cfg.device = dist.device(cfg.device)
    table = Table(title=f"training {cfg.out} (recipe {recipe['name']})", title_justify="left")
    for col in ("epoch", "loss", "lr", "P", "R", "F1", "mA", "samples/s"):
        table.add_column(col, justify="right")

    def on_epoch(r: dict) -> None:
        rate = f"{r['samples_per_s']:,.0f}" if r.get("samples_per_s") else "-"
        table.add_row(f"{r['epoch']}/{cfg.epochs}", f"{r['loss']:.4f}", f"{r['lr']:.2e}", f"{100 * r['precision']:.2f}",
                      f"{100 * r['recall']:.2f}", f"{100 * r['f1']:.2f}", f"{100 * r['mA']:.2f}", rate)

    if dist.is_main:
        if recipe["overrides"]:
            console.print(f"recipe {recipe['name']}, overridden: {recipe['overrides']}")
        with Live(table, console=console, refresh_per_second=2):
            best = train(cfg, recipe, own["resume"], dist, on_epoch)
        console.print(f"selected epoch {best['epoch']} ({'test' if cfg.selection == 'test' else 'validation'}-selected) "
                      f"F1 {100 * best['f1']:.2f}; checkpoints in {cfg.out}/ (best.json, last.json)")
    else:
        train(cfg, recipe, own["resume"], dist)
    dist.shutdown()


command_with_config(app, "train", TrainConfig, [
    parameter("store", typer.Argument(None, help="token store from `par extract`"), Optional[str]),
    RECIPE, CONFIG,
    parameter("resume", typer.Option(False, help="continue the run in --out from its last committed epoch"), bool),
], _train, "Stage two: train the fusion Transformer and heads from a token store.")


@app.command("eval")
def eval_cmd(store: str = typer.Argument(..., help="token store"),
             checkpoint: str = typer.Option(..., help="run folder, best.json/last.json or .safetensors"),
             out: Optional[str] = typer.Option(None, "--out", "-o", help="output folder (default: RUN/eval-<split>, "
                                               "with -T<frames> / -random-s<seed> when those differ from the run's)"),
             frames: Optional[int] = typer.Option(None, help="T evaluation frames (default: the checkpoint's)"),
             sampling: Optional[str] = typer.Option(None, help="fixed (evenly spaced, default) or random (the "
                                                    "reference's test loader, keyed by --seed)"),
             seed: Optional[int] = typer.Option(None, help="seed of random evaluation frames (default: the run's)"),
             split: str = typer.Option("test"), device: str = typer.Option("cpu"),
             workers: Optional[int] = typer.Option(None, help="loader processes (default as `par train`)"),
             threshold: Optional[float] = typer.Option(None, help="default: the checkpoint's (0.45)"),
             baseline: bool = typer.Option(False, help="also score the majority-value baseline on the same split")) -> None:
    """Evaluate a checkpoint with the paper's protocol; writes metrics.json, groups.md/csv, predictions.npz."""
    from par_pipeline.workflows.evaluate import evaluate_checkpoint

    metrics = evaluate_checkpoint(store, checkpoint, out, frames, split, device, workers, threshold, sampling, seed, baseline)
    render_group_table(metrics, f"{split} split, T={metrics['frames']} ({metrics['sampling']}), "
                                f"threshold {metrics['threshold']}: {metrics['selection']}")
    if baseline:
        m, b = metrics["protocol"]["mean"], metrics["baseline"]["protocol"]["mean"]
        console.print(f"[bold]model F1 {100 * m['f1']:.2f} (mA {100 * m['mA']:.2f}) vs majority-value baseline "
                      f"F1 {100 * b['f1']:.2f} (mA {100 * b['mA']:.2f})[/]")
    console.print(f"wrote {metrics['out']}/metrics.json, groups.md, groups.csv, predictions.npz")


def render_group_table(metrics: dict, title: str) -> None:
    from par_pipeline.reports import GROUP_HEADER, group_rows, summary_lines

    t = Table(title=title, title_justify="left")
    for i, col in enumerate(GROUP_HEADER):
        t.add_column(col, justify="left" if i == 0 else "right")
    rows = group_rows(metrics)
    for row in rows[:-1]:
        t.add_row(*row)
    t.add_row(*rows[-1], style="bold")
    console.print(t)
    for line in summary_lines(metrics)[1:]:
        console.print(line, highlight=False)


def _ablation(own: dict[str, Any], given: dict[str, Any]) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from par_pipeline.workflows.ablation import run_ablation

    try:
        frame_list = [int(t) for t in own["sweep_frames"].split()]
    except ValueError:
        raise ParError(f"--sweep-frames must be integers separated by spaces, not '{own['sweep_frames']}'") from None
    base = {**read_config_file(own["config"]), **given}
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("ETA"), TimeRemainingColumn(), console=console) as progress:
        sweep = progress.add_task("sweep", total=None)
        run = progress.add_task("run", total=None)

        def on_point(i: int, n: int, p, reused: bool) -> None:
            progress.update(sweep, total=n, completed=i, description=f"sweep (run {i + 1}/{n})")
            progress.reset(run, total=p.config.epochs, description=f"{p.variant} T={p.frames} seed {p.seed}" +
                           (" (reused)" if reused else ""))

        def on_epoch(r: dict) -> None:
            progress.update(run, completed=r["epoch"],
                            description=f"{progress.tasks[run].description.split(' F1')[0]} F1 {100 * r['f1']:.1f}")

        rows = run_ablation(own["store"], own["out"], frame_list, own["variants"].split(), own["seeds"], own["recipe"],
                            base, on_point, on_epoch)
        progress.update(sweep, completed=progress.tasks[sweep].total)
    t = Table(title=f"ablation ({own['seeds']} seed(s))", title_justify="left")
    for col in ("variant", "T", "P", "R", "F1", "mA"):
        t.add_column(col, justify="left" if col == "variant" else "right")
    for r in rows:
        cells = [f"{100 * r[k]:.2f}" + (f" ± {100 * r[k + '_std']:.2f}" if r["seeds"] > 1 else "")
                 for k in ("precision", "recall", "f1", "mA")]
        t.add_row(r["variant"], str(r["frames"]), *cells)
    console.print(t)
    console.print(f"wrote {own['out']}/ablation.json, ablation.csv, ablation.md, ablation.png")


command_with_config(app, "ablation", TrainConfig, [
    parameter("store", typer.Argument(..., help="ONE token store; every point trains from it"), str),
    parameter("out", typer.Option(Path("results"), "--out", "-o", help="results folder"), Path),
    parameter("sweep_frames", typer.Option("1 2 4 6", help="frame counts T, space-separated"), str),
    parameter("variants", typer.Option("fusion no-fusion", help="from data_manifests/ablation/variants.json"), str),
    parameter("seeds", typer.Option(1, help="seeds 0..N-1 of every point; mean and std are reported"), int),
    RECIPE, CONFIG,
], _ablation, "Frame-count sweep and component ablation from one store: ablation.json/.csv/.md and ablation.png.",
    exclude=("frames", "seed", "out"))


@app.command()
def report(runs: list[Path] = typer.Argument(..., help="run folders (from par train) or eval folders (from par eval)"),
           out: Path = typer.Option(Path("report"), "--out", "-o")) -> None:
    """Several runs side by side: report.md (means and the per-group F1 table of the paper's Table 2) and report.png."""
    from par_pipeline.workflows.report import compare_runs

    console.print(compare_runs(runs, out))
    console.print(f"wrote {out}/report.md, report.png")


@app.command()
def predict(inputs: list[Path] = typer.Argument(None, help="frame folders (one person each, or a folder of them) "
                                                "and/or video files"),
            checkpoint: str = typer.Option(..., help="run folder, best.json/last.json or .safetensors"),
            pretrained: Optional[str] = typer.Option(None, help="the CLIP weights file the checkpoint's store was "
                                                     "built with"),
            mars_root: Optional[Path] = typer.Option(None, help="MARS root, with --tracklet"),
            tracklet: list[str] = typer.Option([], help="MARS tracklet id (repeatable), e.g. 0001C1T0001"),
            frames: Optional[int] = typer.Option(None, help="T evenly spaced frames (default: all frames)"),
            json_out: Optional[Path] = typer.Option(None, "--json", help="write the records as JSON"),
            csv_out: Optional[Path] = typer.Option(None, "--csv", help="write one row per tracklet"),
            device: str = typer.Option("cpu"), batch_size: int = typer.Option(64),
            workers: int = typer.Option(2, help="JPEG decode workers")) -> None:
    """Attributes of new tracklets and videos: probabilities and a decoded description per group."""
    from par_pipeline.workflows.predict import collect_inputs, predict as run_predict, write_predictions

    items = collect_inputs(inputs or [], mars_root, tracklet)
    with progress_bar("predict", None, "frames") as update:
        records = run_predict(items, checkpoint, pretrained, device, frames, batch_size, update, workers)
    write_predictions(records, checkpoint, json_out, csv_out)
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


@app.command()
def verify(path: str = typer.Argument(..., help="token store, run folder or checkpoint .json")) -> None:
    """Check every checksum and every stored number; names the first bad shard, row or file (exit 2)."""
    from par_pipeline.workflows.verify import verify as run_verify

    with progress_bar("verify", None, "rows") as update:
        summary = run_verify(path, update)
    console.print(kv_table(f"{summary['kind']} {path}: all checks passed",
                           [(k, v) for k, v in summary.items() if k not in ("kind", "path")]))


@app.command()
def bench(out: Path = typer.Option(Path("bench"), "--out", "-o", help="folder for bench.json and the work files"),
          part: str = typer.Option("all", help="all, or a comma-separated subset of extract,train,predict,sweep"),
          clip_model: str = typer.Option("ViT-B-16-quickgelu", help="CLIP model of the extract part (random weights: "
                                         "speed does not depend on them)"),
          fusion_model: str = typer.Option("vtf-par", help="fusion model config of the train part"),
          device: str = typer.Option("cpu"), precision: Optional[str] = typer.Option(None, help="CLIP precision "
                                                                                   "(default: fp16 on GPU, fp32 on CPU)"),
          batch_size: int = typer.Option(32), workers: int = typer.Option(2, help="JPEG decode workers"),
          decode: str = typer.Option("pil", help="JPEG decoding of the extract part: pil or torchvision"),
          compile: bool = typer.Option(False, help="torch.compile the image encoder in the extract part"),
          train_workers: Optional[int] = typer.Option(None, help="training loader workers (default as `par train`)"),
          tracklets: int = typer.Option(16, help="synthetic tracklets per split"),
          frames_per_tracklet: int = typer.Option(8, help="frames per synthetic tracklet"),
          train_batch: int = typer.Option(16), epochs: int = typer.Option(2),
          sweep_epochs: int = typer.Option(2), sweep_frames: str = typer.Option("1 2 4 6"),
          host_frames: int = typer.Option(4096, help="rows of the extraction host-loop measurement")) -> None:
    """Throughput figures as ratios in one run (pipeline vs model-only, store bytes, loader, sweep); bench.json."""
    from par_pipeline.tools.bench import BenchSizes, run_bench

    sizes = BenchSizes(clip_model=clip_model, fusion_model=fusion_model, device=device, precision=precision,
                       decode=decode, compile=compile, batch_size=batch_size, workers=workers, train_workers=train_workers, tracklets=tracklets,
                       frames_per_tracklet=frames_per_tracklet, train_batch=train_batch, epochs=epochs,
                       sweep_epochs=sweep_epochs, sweep_frames=[int(t) for t in sweep_frames.split()],
                       host_frames=host_frames)
    results, rows = run_bench(out, part, sizes, lambda msg: console.print(f"[dim]{msg}[/]"))
    t = Table(title=f"benchmark ({results['machine']['where']})", title_justify="left")
    for col, justify in (("measure", "left"), ("value", "right"), ("target", "right")):
        t.add_column(col, justify=justify)
    for row in rows:
        t.add_row(*row)
    console.print(t)
    console.print(f"wrote {out}/bench.json")


def main() -> None:
    try:
        app()
    except ParError as exc:
        err_console.print(f"[bold red]error:[/] {one_line(exc)}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]; re-run the same command to resume", highlight=False)
        sys.exit(130)


if __name__ == "__main__":
    main()
