"""The `par` command line: parses options, calls par_pipeline.workflows, renders with rich."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.markup import escape
from rich.table import Table

from par_pipeline.config import (
    BenchConfig,
    EvalConfig,
    ExportConfig,
    ExtractConfig,
    ImportConfig,
    LinkConfig,
    PredictConfig,
    SynthConfig,
    TrackConfig,
    TrainConfig,
    build_config,
    configure,
)
from par_pipeline.data.layouts import LAYOUTS, DatasetLayout
from par_pipeline.errors import ParError, one_line
from par_pipeline.experiments import DEFAULT_EXPERIMENT
from par_pipeline.options import COMMAND_LINE, parse_numbers
from par_pipeline.reports import pct, pct_spread

from .options import command_with_config, parameter, read_config_file

try:  # Typer >= 0.17 carries its own click, whose exceptions derive from this
    from typer.exceptions import TyperException as UsageError
except ImportError:  # older Typer raises click's
    from click import ClickException as UsageError
from .ui import RateColumn, console, err_console, kv_table, progress_bar, warn

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Video pedestrian attribute recognition (VTF-PAR) on precomputed CLIP tokens.")
manifest_app = typer.Typer(no_args_is_help=True, help="Build a manifest from a dataset layout.")
app.add_typer(manifest_app, name="manifest")
import_app = typer.Typer(no_args_is_help=True, help="Bring a checkpoint trained elsewhere into a par run folder.")
app.add_typer(import_app, name="import")


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


def _add_manifest_command(layout: DatasetLayout) -> None:
    """`par manifest LAYOUT ROOT --out F`, one command per dataset layout."""
    def command(
        root: Path = typer.Argument(..., help=f"{layout.title} root holding {layout.folders}"),
        out: Path = typer.Option(..., "--out", "-o", help="manifest to write (JSON Lines)"),
        attributes: Optional[Path] = typer.Option(None, help=f"{layout.attribute_csv} (default: found in ROOT)"),
        schema: Optional[str] = typer.Option(None, help=f"attribute schema name or JSON (default: {layout.name})"),
    ) -> None:
        _manifest(layout.name, root, out, attributes, schema)

    command.__doc__ = f"{layout.title} layout + {layout.attribute_csv} -> manifest."
    manifest_app.command(layout.name)(command)


for _layout in LAYOUTS.values():
    _add_manifest_command(_layout)


def _layers(own: dict[str, Any], given: dict[str, Any], extra: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The `--config` file (when given), then the command line (its options and the command's own arguments)."""
    layers = [(f"--config {own['config']}", read_config_file(own["config"]))] if own.get("config") else []
    return [*layers, (COMMAND_LINE, {**given, **extra})]


def _stage_config(stage: str, own: dict[str, Any], given: dict[str, Any], extra: dict[str, Any]) -> tuple[Any, dict]:
    return configure(stage, own.get("recipe"), _layers(own, given, extra))


def _command_config(command: str, own: dict[str, Any], given: dict[str, Any], extra: dict[str, Any]) -> Any:
    return build_config(command, _layers(own, given, extra))


RECIPE = parameter("recipe", typer.Option(None, help="recipe of the defaults: vtf-par-official (default), "
                                                   "vtf-par-paper, or a recipe JSON"), Optional[str])
CONFIG = parameter("config", typer.Option(None, help="JSON file of options (the command line wins)"), Optional[Path])


def _synth(own: dict[str, Any], given: dict[str, Any]) -> None:
    from par_pipeline.tools.scenes import synthesize_scene
    from par_pipeline.tools.synth import synthesize

    cfg = _command_config("synth", own, given, {"out": str(own["out"])})
    if cfg.video:
        with progress_bar("synth", None, "frames") as update:
            people = synthesize_scene(cfg, update)
        if cfg.cameras > 1:
            console.print(f"wrote a site of {cfg.cameras} cameras to {cfg.out} ({len(people)} people, "
                          f"{cfg.seconds:g} s at {cfg.fps} fps): <camera>/video.mp4 each, site.json, gt.txt and "
                          f"labels.csv")
        else:
            console.print(f"wrote {cfg.out}/video.mp4 ({len(people)} people, {cfg.seconds:g} s at {cfg.fps} fps), "
                          f"gt/gt.txt and labels.csv")
        return
    with progress_bar("synth", None, "frames") as update:
        layout, plan = synthesize(cfg, update)
    total = sum(t.num_frames for t in plan)
    console.print(f"wrote {len(plan):,} tracklets, {total:,} frames to {cfg.out} ({layout} layout)")


command_with_config(app, "synth", SynthConfig, [
    parameter("out", typer.Argument(..., help="folder to create"), Path), CONFIG,
], _synth, "Write a synthetic MARS- or Duke-shaped dataset whose frames show their attributes.")


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
    from rich.console import Group
    from rich.live import Live
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from par_pipeline.distributed import DistContext
    from par_pipeline.workflows.train import train

    extra = {"store": own["store"]} if own["store"] else {}
    layers = _layers(own, given, extra)
    if own["resume"]:  # the run's own options (config.json) under what is given now: --out and --resume suffice
        from par_pipeline.workflows.train import saved_options

        out = {k: v for _, layer in layers for k, v in layer.items()}.get("out")
        saved_recipe, saved = saved_options(out) if out else (None, {})
        if saved:
            layers = [(f"{out}/config.json", saved), *layers]
            own = {**own, "recipe": own.get("recipe") or saved_recipe}
    cfg, recipe = configure("train", own.get("recipe"), layers)
    if not cfg.store:
        raise ParError("no token store given: `par train STORE` (or 'store' in --config)")
    dist = DistContext.from_env()
    cfg.device = dist.device(cfg.device)
    table = Table(title=f"training {cfg.out} (recipe {recipe['name']})", title_justify="left")
    for col in ("epoch", "loss", "lr", "P", "R", "F1", "mA", "samples/s"):
        table.add_column(col, justify="right")

    def on_epoch(r: dict) -> None:
        rate = f"{r['samples_per_s']:,.0f}" if r.get("samples_per_s") else "-"
        table.add_row(f"{r['epoch']}/{cfg.epochs}", f"{r['loss']:.4f}", f"{r['lr']:.2e}", pct(r['precision']),
                      pct(r['recall']), pct(r['f1']), pct(r['mA']), rate)

    # --cache ram: what was chosen and why, then the rows loaded into memory (rate and ETA), above the epochs
    load = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), RateColumn(),
                    TextColumn("ETA"), TimeRemainingColumn(), console=console)

    def loading(what: str, done: int, total: int) -> None:
        if not load.tasks:
            console.print(what, highlight=False, soft_wrap=True)
            load.add_task("rows into memory", total=total or 0, unit="rows", visible=bool(total))
        load.update(load.tasks[0].id, completed=done)

    if dist.is_main:
        if recipe["overrides"]:
            console.print(f"recipe {recipe['name']}, overridden: {recipe['overrides']}")
        with Live(Group(load, table), console=console, refresh_per_second=2):
            best = train(cfg, recipe, own["resume"], dist, on_epoch, warn=warn, loading=loading)
        console.line()  # a Live display ends without a newline where output is not a terminal
        console.print(
            f"selected epoch {best['epoch']} ({'test' if cfg.selection == 'test' else 'validation'}-selected) "
            f"F1 {pct(best['f1'])}; checkpoints in {cfg.out}/ (best.json, last.json)"
        )
        _print_trackers(Path(cfg.out))
    else:
        train(cfg, recipe, own["resume"], dist)
    dist.shutdown()


command_with_config(app, "train", TrainConfig, [
    parameter("store", typer.Argument(None, help="token store from `par extract`"), Optional[str]),
    RECIPE, CONFIG,
    parameter("resume", typer.Option(False, help="continue the run in --out from its last committed epoch"), bool),
], _train, "Stage two: train the fusion Transformer and heads from a token store.")


def _eval(own: dict[str, Any], given: dict[str, Any]) -> None:
    from par_pipeline.workflows.evaluate import evaluate_checkpoint

    cfg = _command_config("eval", own, given, {"store": own["store"], "checkpoint": own["checkpoint"]})
    metrics = evaluate_checkpoint(cfg, warn)
    render_group_table(metrics, f"{cfg.split} split, T={metrics['frames']} ({metrics['sampling']}), "
                                f"threshold {metrics['threshold']}: {metrics['selection']}")
    if cfg.baseline:
        m, b = metrics["protocol"]["mean"], metrics["baseline"]["protocol"]["mean"]
        console.print(f"[bold]model F1 {pct(m['f1'])} (mA {pct(m['mA'])}) vs majority-value baseline "
                      f"F1 {pct(b['f1'])} (mA {pct(b['mA'])})[/]")
    console.print(f"wrote {metrics['out']}/metrics.json, groups.md, groups.csv, predictions.npz")
    if metrics["trackers"]:
        console.print(f"added to the run's tracked runs: {', '.join(metrics['trackers'])}")


def _print_trackers(folder: Path, sweep: bool = False) -> None:
    """Where each tracker that holds the run's (or the sweep's) figures shows them."""
    from par_pipeline.experiments import read_record, where

    for name, state in read_record(folder).items():
        console.print(f"{name}: {where(name, folder, state, sweep)}", highlight=False, soft_wrap=True)


CHECKPOINT = parameter("checkpoint", typer.Option(..., help="run folder, best.json/last.json or .safetensors"), str)
command_with_config(app, "eval", EvalConfig, [
    parameter("store", typer.Argument(..., help="token store"), str), CHECKPOINT, CONFIG,
], _eval, "Evaluate a checkpoint with the paper's protocol; writes metrics.json, groups.md/csv, predictions.npz.")


def _import(own: dict[str, Any], given: dict[str, Any]) -> None:
    from par_pipeline.workflows.imports import import_reference

    cfg = _command_config("import", own, given, {"checkpoint": str(own["checkpoint"]), "store": own["store"],
                                                 "out": str(own["out"])})
    meta = import_reference(cfg)
    imported = meta["imported"]
    console.print(kv_table(f"imported {cfg.checkpoint} -> {cfg.out}", [
        ("attributes", f"{len(meta['attributes'])} ({meta['schema']})"), ("sha256", imported["sha256"]),
        ("unused vit.* tensors", imported["unused_vit_tensors"]),
        ("store's CLIP checked", "yes" if imported["clip_checked"] else "no (--allow-other-clip)"),
        ("next", f"par eval {cfg.store} --checkpoint {cfg.out}")]))


command_with_config(import_app, "vtf-par", ImportConfig, [
    parameter("checkpoint", typer.Argument(..., help="the authors' checkpoint (VTF-Pretrain.pth, or any saved "
                                           "TransformerClassifier state dict)"), Path),
    parameter("store", typer.Option(..., help="token store (OpenAI CLIP ViT-B/16) of the dataset it was trained on"),
              str),
    parameter("out", typer.Option(..., "--out", "-o", help="run folder to write"), Path),
    CONFIG,
], _import, "A reference VTF-PAR checkpoint (Event-AHU/VTF_PAR) -> a par run folder for eval, predict and report.")


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
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from par_pipeline.workflows.ablation import run_ablation

    frame_list = parse_numbers("sweep_frames", own["sweep_frames"])
    base = {**read_config_file(own["config"]), **given}
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("ETA"), TimeRemainingColumn(), console=console) as progress:
        sweep = progress.add_task("sweep", total=None)
        run = progress.add_task("run", total=None)

        def on_point(i: int, n: int, p, reused: bool) -> None:  # each point evaluated (or reused), once trained
            progress.update(sweep, total=n, completed=i, description=f"sweep (point {i + 1}/{n})")
            progress.reset(run, total=1, description=f"{p.variant} T={p.frames} seed {p.seed}" +
                           (" (reused)" if reused else ": evaluating"))

        def on_together(points: list) -> None:  # one seed's points train side by side: one epoch bar for them all
            p = points[0]
            progress.reset(run, total=len(points) * p.config.epochs,
                           description=f"{len(points)} points side by side (seed {p.seed})")

        def on_epoch(r: dict) -> None:
            progress.advance(run)
            progress.update(run, description=f"{progress.tasks[run].description.split(' F1')[0]} F1 "
                                             f"{100 * r['f1']:.1f}")

        def loading(what: str, done: int, total: int) -> None:  # --cache ram/device: the sweep's rows, once
            if done == 0:
                console.print(what, highlight=False, soft_wrap=True)
            if total:
                progress.update(run, description="rows into memory", completed=done, total=total)

        rows = run_ablation(own["store"], own["out"], frame_list, own["variants"].split(), own["seeds"], own["recipe"],
                            base, on_point, on_epoch, warn, loading, on_together)
        progress.update(sweep, completed=progress.tasks[sweep].total)
    console.line()
    t = Table(title=f"ablation ({own['seeds']} seed(s))", title_justify="left")
    for col in ("variant", "T", "P", "R", "F1", "mA"):
        t.add_column(col, justify="left" if col == "variant" else "right")
    for r in rows:
        cells = [pct_spread(r, k) for k in ("precision", "recall", "f1", "mA")]
        t.add_row(r["variant"], str(r["frames"]), *cells)
    console.print(t)
    console.print(f"wrote {own['out']}/ablation.json, ablation.csv, ablation.md, ablation.png")
    _print_trackers(Path(own["out"]), sweep=True)


command_with_config(app, "ablation", TrainConfig, [
    parameter("store", typer.Argument(..., help="ONE token store; every point trains from it"), str),
    parameter("out", typer.Option(Path("results"), "--out", "-o", help="results folder"), Path),
    parameter("sweep_frames", typer.Option("1 2 4 6", help="frame counts T, separated by commas or spaces"), str),
    parameter("variants", typer.Option("fusion no-fusion", help="from data_manifests/ablation/variants.json"), str),
    parameter("seeds", typer.Option(1, help="seeds 0..N-1 of every point; mean and std are reported"), int),
    RECIPE, CONFIG,
], _ablation, "Frame-count sweep and component ablation from one store: ablation.json/.csv/.md and ablation.png.",
    exclude=("frames", "seed", "out"))


@app.command("export-logs")
def export_logs(
    runs: list[Path] = typer.Argument(..., help="run folders (par train) or ablation folders (par ablation)"),
    to: str = typer.Option(..., "--to", help="tensorboard, mlflow or wandb (several separated by commas)"),
    experiment: str = typer.Option(DEFAULT_EXPERIMENT, help="MLflow experiment / W&B project of runs not tracked "
                                   "there yet"),
) -> None:
    """Send finished runs' log.jsonl and configuration to experiment trackers (what a tracker has is not sent again)."""
    from par_pipeline.experiments import where
    from par_pipeline.workflows.export_logs import export_logs as export

    done = export(runs, parse_numbers("to", to, str), experiment, warn)
    t = Table(title="exported", title_justify="left")
    for col in ("run", "tracker", "epochs sent", "epochs there", "where"):
        t.add_column(col, justify="right" if col.startswith("epochs") else "left")
    for e in done:
        t.add_row(str(e.run), e.tracker, str(e.sent), str(e.logged), where(e.tracker, e.run, e.state))
    console.print(t)


@app.command()
def report(runs: list[Path] = typer.Argument(..., help="run folders (par train), eval folders (par eval) or ablation "
                                             "folders (par ablation)"),
           out: Path = typer.Option(Path("report"), "--out", "-o"),
           manifest: Optional[str] = typer.Option(None, help="the stores' manifest, where it is now (default: the "
                                                  "path the store recorded), for the tracklets' thumbnails")) -> None:
    """Runs side by side: report.md and report.png (the per-group F1 of the paper's Table 2) and report.html (per
    attribute curves, confusion matrices, the worst tracklets with their frames, ablation views)."""
    from par_pipeline.workflows.report import compare_runs

    console.print(compare_runs(runs, out, manifest))
    console.print(f"wrote {out}: " + ", ".join(sorted(p.name for p in out.iterdir() if not p.name.startswith("."))))


def _predict(own: dict[str, Any], given: dict[str, Any]) -> None:
    from par_pipeline.workflows.predict import collect_inputs, predict, write_predictions

    cfg = _command_config("predict", own, given, {"checkpoint": own["checkpoint"]})
    items = collect_inputs(own["inputs"] or [], own["mars_root"], own["tracklet"])
    with progress_bar("predict", None, "frames") as update:
        records, runtime = predict(items, cfg, update)
    write_predictions(records, runtime, cfg)
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
    console.print(runtime_said(runtime), highlight=False)


command_with_config(app, "predict", PredictConfig, [
    parameter("inputs", typer.Argument(None, help="frame folders (one person each, or a folder of them) and/or video "
                                       "files"), Optional[list[Path]]),
    CHECKPOINT,
    parameter("mars_root", typer.Option(None, help="MARS root, with --tracklet"), Optional[Path]),
    parameter("tracklet", typer.Option([], help="MARS tracklet id (repeatable), e.g. 0001C1T0001"), list[str]),
    CONFIG,
], _predict, "Attributes of new tracklets and videos: probabilities and a decoded description per group.")


def runtime_said(record: dict[str, Any]) -> str:
    """One line on what answered: the runtime, and an export's quantisation with its measured agreement."""
    text = f"runtime {record['name']} {record['version']}"
    if record.get("export"):
        text += f" (export {record['export']}"
        q, a = record.get("quantization"), record.get("agreement") or {}
        if q:
            text += (f", {q['precision']}: token cosine >= {a['token_min_cosine']:.4f}, probabilities within "
                     f"{a['probability_max_difference']:.3f}, F1 {a['f1_export']:.3f} vs {a['f1_torch']:.3f} fp32")
        text += ")"
    return text


def _export(own: dict[str, Any], given: dict[str, Any]) -> None:
    from par_pipeline.workflows.export import export_checkpoint

    cfg = _command_config("export", own, given, {"checkpoint": own["checkpoint"], "out": str(own["out"])})
    with console.status("exporting") as status:
        doc = export_checkpoint(cfg, lambda msg: status.update(msg))
    a = doc["agreement"]
    rows = [("graphs", ", ".join(g["file"] for g in doc["graphs"].values())),
            ("quantization", f"int8: {doc['quantization']['method']}" if doc["quantization"] else "none (fp32)"),
            ("checked on", f"{a['tracklets']} tracklets, {a['frames']} frames of {a['manifest']}"),
            ("token min cosine", f"{a['token_min_cosine']:.6f}"),
            ("probability max difference", f"{a['probability_max_difference']:.2e}"),
            ("decisions differing", f"{a['decisions_differing']} of {a['decisions']}"),
            ("F1 (protocol) export / PyTorch", f"{a['f1_export']:.4f} / {a['f1_torch']:.4f}")]
    console.print(kv_table(f"par export {cfg.checkpoint}", rows))
    files = [f["file"] for g in doc["graphs"].values() for f in (g, g.get("weights")) if f]
    console.print(f"wrote {cfg.out}: export.json, " + ", ".join(files))


command_with_config(app, "export", ExportConfig, [
    parameter("checkpoint", typer.Argument(..., help="run folder (best.json), best.json/last.json or .safetensors"),
              str),
    parameter("out", typer.Option(..., help="export folder to write"), Path),
    CONFIG,
], _export, "The checkpoint's CLIP encoder and fusion model as ONNX graphs (checked against PyTorch) for "
            "--runtime onnxruntime / openvino.")


@app.command()
def search(out: Path = typer.Argument(..., help="a par track output folder (recorded or live), or a folder of them"),
           conditions: list[str] = typer.Argument(..., help="conditions, all of which must hold, joined by commas or "
                                                  "'and' or given as separate arguments: GROUP (a yes/no group is "
                                                  "yes), GROUP = no, not GROUP, GROUP = VALUE, not GROUP = VALUE, "
                                                  "any of them followed by >= PROBABILITY; e.g. \"backpack = no, "
                                                  "hat\", \"top color = red >= 0.5\", \"not gender female\""),
           json_out: bool = typer.Option(False, "--json", help="print the results as JSON (par-search) instead"),
           by: str = typer.Option("track", "--by", help="track: each camera's tracked people; person: the people "
                                  "of a `par link` folder, across cameras"),
           ) -> None:
    """The tracked people matching attribute conditions, best first (the grammar of --alert rules and of the
    tracks.html search box)."""
    import json

    from par_pipeline.workflows.search import search as run_search
    from par_pipeline.workflows.search import search_people

    if by not in ("track", "person"):
        raise ParError(f"--by {by!r}: track or person")
    found = (search_people if by == "person" else run_search)(out, conditions)
    if json_out:
        print(json.dumps(found, indent=1))
        return
    results, texts = found["results"], found["conditions"]
    if not results:
        console.print(f"nobody matches {' AND '.join(texts)} in {out}", highlight=False)
        return
    if by == "person":
        _people_table(results, texts)
        return
    folders = sorted({r["folder"] for r in results})
    runs = any("run" in r for r in results)
    n = len(results)
    t = Table(title=f"{n} {'person matches' if n == 1 else 'people match'} {' AND '.join(texts)}",
              title_justify="left")
    columns = ["score", *(["folder"] if len(folders) > 1 else []), "video", *(["run"] if runs else []), "track",
               "frames", *texts, "attributes"]
    for col in columns:
        t.add_column(col, justify="left" if col in ("folder", "video", "attributes") else "right")
    for r in results[:50]:
        t.add_row(f"{r['score']:.3f}", *([str(Path(r["folder"]).relative_to(out) if Path(r["folder"]) != out
                                               else ".")] if len(folders) > 1 else []),
                  Path(r["source"]).name, *([str(r.get("run", ""))] if runs else []), str(r["track"]),
                  f"{r['first_frame']}-{r['last_frame']}", *(f"{r['scores'][c]:.2f}" for c in texts),
                  r["line"].partition(" ")[2])
    console.print(t)
    if n > 50:
        console.print(f"[dim]the first 50 of {n} shown; --json gives every one[/]")


def _people_table(results: list[dict[str, Any]], texts: list[str]) -> None:
    n = len(results)
    t = Table(title=f"{n} {'person matches' if n == 1 else 'people match'} {' AND '.join(texts)}",
              title_justify="left")
    for col in ("score", "person", "cameras", "seconds", *texts, "attributes"):
        t.add_column(col, justify="left" if col in ("cameras", "attributes") else "right")
    for r in results[:50]:
        t.add_row(f"{r['score']:.3f}", str(r["person"]), " > ".join(r["cameras"]),
                  f"{r['first_time']:.1f}-{r['last_time']:.1f}", *(f"{r['scores'][c]:.2f}" for c in texts), r["line"])
    console.print(t)
    if n > 50:
        console.print(f"[dim]the first 50 of {n} shown; --json gives every one[/]")


@app.command()
def verify(path: str = typer.Argument(..., help="token store, run folder or checkpoint .json")) -> None:
    """Check every checksum and every stored number; names the first bad shard, row or file (exit 2)."""
    from par_pipeline.workflows.verify import verify as run_verify

    with progress_bar("verify", None, "rows") as update:
        summary = run_verify(path, update)
    console.print(kv_table(f"{summary['kind']} {path}: all checks passed",
                           [(k, v) for k, v in summary.items() if k not in ("kind", "path")]))


def _track(own: dict[str, Any], given: dict[str, Any]) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from par_pipeline.footage.stream import is_live
    from par_pipeline.workflows.track import track_sources

    sources = own["sources"] or []
    extra = {"checkpoint": own["checkpoint"], "out": str(own["out"])}
    if own["alert"]:
        extra["alerts"] = own["alert"]
    cfg = _command_config("track", own, given, extra)
    if cfg.live or any(is_live(s) for s in sources):
        _track_live(sources, cfg)
        return
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), RateColumn(),
                  TimeElapsedColumn(), console=console) as progress:
        task = progress.add_task("track", total=None, unit="frames", visible=False)  # shown once frames come

        def update(stage: str, done: int, total: int | None) -> None:
            progress.update(task, description=stage, completed=done, total=total, visible=True)
        docs = track_sources(sources, cfg, update)
    for doc in docs:
        _tracks_table(doc)
        if doc["stopped"]:
            console.print(f"[yellow]the video stopped early: {doc['stopped']['reason']}; the tracks above cover the "
                          f"{doc['frames_read']:,} frames before it[/]")
        if "alerts" in doc:
            _alerts_said(doc["alerts"]["events"], doc["alerts"]["webhook"])
    extras = (f"; {cfg.annotate}" if cfg.annotate else "") + (f"; {cfg.save_crops}/" if cfg.save_crops else "")
    console.print(f"wrote {cfg.out}: {_written(Path(cfg.out), len(docs) > 1)}{extras}", highlight=False)


def _written(out: Path, several: bool) -> str:
    """The outputs that exist in OUT (or in each OUT/<name>/), as the summary line names them."""
    from par_pipeline.footage.live_folder import LIVE_FILES

    folders = sorted(p for p in out.iterdir() if p.is_dir()) if several else [out]
    names = [n for n in LIVE_FILES if any((f / n).is_file() for f in folders)]
    return ("<name>/" if several else "") + ", ".join(names)


def _alerts_said(events: int, webhook: dict[str, Any] | None) -> None:
    console.print(f"{events} alert event(s), in alerts.jsonl", highlight=False)
    if webhook and (webhook["failed"] or webhook["undelivered"]):
        lost = webhook["failed"] + webhook["undelivered"]
        warn(f"webhook {webhook['url']}: {lost} of {webhook['posted']} alert event(s) not delivered "
             f"({webhook['failed']} failed after {webhook['retries']} retries, {webhook['undelivered']} still queued "
             f"at the end; last error: {webhook['last_error'] or 'none'}); every one is in alerts.jsonl")


def _tracks_table(doc: dict[str, Any]) -> None:
    n = len(doc["tracks"])
    t = Table(title=f"{doc['source']}: {n} {'person' if n == 1 else 'people'} in {doc['frames_read']:,} frames"
              + (f" (every run of this folder; this was run {doc['run']})" if doc.get("run", 1) > 1 else ""),
              title_justify="left")
    runs = doc.get("run", 1) > 1
    for col in (*(["run"] if runs else []), "track", "frames", "first", "last", "attributes"):
        t.add_column(col, justify="left" if col == "attributes" else "right")
    for r in doc["tracks"][:40]:
        t.add_row(*([str(r.get("run", 1))] if runs else []), str(r["id"]), str(r["frames"]), str(r["first_frame"]),
                  str(r["last_frame"]), r["line"].partition(" ")[2])
    console.print(t)
    if n > 40:
        console.print(f"[dim]the first 40 of {n} shown; tracks.csv holds every one[/]")
    if doc.get("runtime"):
        console.print(runtime_said(doc["runtime"]), highlight=False)
    console.print()


EVENT_STYLE = {"alert": "[bold red]alert[/]", "early": "[bold yellow]early alert[/]",
               "confirmed": "[bold red]confirmed[/]", "retracted": "[green]retracted[/]"}


def _track_live(sources: list[str], cfg: Any) -> None:
    """Each person's line as they leave, alert events in bold, under a line per camera (frames read, rate, dropped),
    until the streams end or Ctrl-C / SIGTERM (which finish every output, then exit 130 / 143)."""
    from rich.progress import Progress, TextColumn, TimeElapsedColumn

    from par_pipeline.workflows.live import track_live

    with Progress(TextColumn("[bold]{task.description}"), TextColumn("{task.completed:,.0f} frames"), RateColumn(),
                  TextColumn("{task.fields[dropped]:,} dropped"), TimeElapsedColumn(), console=console) as progress:
        tasks: dict[str, Any] = {}

        def on_event(kind: str, camera: str, payload: dict[str, Any]) -> None:
            where = f"[dim]{escape(camera)}[/] " if len(sources) > 1 else ""
            if kind == "frames":
                if not tasks:  # said once the first video came: a source refused at once prints only its error
                    progress.console.print(f"following {len(sources)} source(s); Ctrl-C ends the run and writes "
                                           f"every output", style="dim")
                if camera not in tasks:
                    tasks[camera] = progress.add_task(camera, total=None, unit="frames", dropped=0)
                progress.update(tasks[camera], completed=payload["frames_read"], dropped=payload["dropped"])
            elif kind == "alert":
                progress.console.print(f"{EVENT_STYLE[payload['event']]} {where}{escape(payload['rule'])}: "
                                       f"{escape(payload['line'])}")
            elif kind == "record":
                state = " (provisional)" if payload["provisional"] else ""
                if "person" in payload:
                    where += f"[bold]person {payload['person']}[/] "
                progress.console.print(f"{where}{escape(payload['line'])}{state}  [dim]frames "
                                       f"{payload['first_frame']}-{payload['last_frame']}[/]", highlight=False)

        docs = track_live(sources, cfg, on_event)
    for doc in docs:
        _tracks_table(doc)
        live = doc["live"]
        console.print(f"{doc['source']}: run {doc['run']}: {live['frames_read']:,} frames read, {live['dropped']:,} "
                      f"dropped, {live['reconnects']} reconnect(s), ended: {live['ended']}; delay from a person's "
                      f"last frame to their record: median {live['delay_s']['median']} s, p95 "
                      f"{live['delay_s']['p95']} s", highlight=False)
        if live["alert_rules"]:
            _alerts_said(sum(live["alert_events"].values()), live["webhook"])
    if docs and "link" in docs[0]["live"]:
        linked = docs[0]["live"]["link"]
        console.print(f"--link: {linked['records']} records of {len(docs)} cameras are {linked['people']} people "
                      f"(links.jsonl; at most {linked['most_open']} records open to change at once)",
                      highlight=False)
    console.print(f"wrote {cfg.out}: {_written(Path(cfg.out), len(sources) > 1)}", highlight=False)
    ended = " ".join(str(doc["live"]["ended"]) for doc in docs)
    if "stopped by SIGINT" in ended or "stopped by SIGTERM" in ended:  # finished cleanly, but stopped: say so
        raise typer.Exit(INTERRUPTED if "SIGINT" in ended else TERMINATED)


def _link(own: dict[str, Any], given: dict[str, Any]) -> None:
    from par_pipeline.workflows.link import link_folders, parse_offsets

    cfg = _command_config("link", own, given, {"out": str(own["out"])})
    doc, _ = link_folders(own["folders"], Path(cfg.out), cfg.threshold, cfg.max_gap, cfg.cues,
                          Path(cfg.transit) if cfg.transit else None, parse_offsets(own["offset"]), cfg.weights,
                          cfg.same_camera_gap)
    people = doc["people"]
    several = [p for p in people if len(p["cameras"]) > 1]
    t = Table(title=f"{len(people)} people in {len(doc['cameras'])} cameras ({len(several)} seen by more than one)",
              title_justify="left")
    for col in ("person", "cameras", "tracks", "seconds", "attributes"):
        t.add_column(col, justify="left" if col in ("cameras", "tracks", "attributes") else "right")
    for p in people[:50]:
        t.add_row(str(p["person"]), " > ".join(p["cameras"]),
                  " ".join(f"{x['camera']}:{x['track']}" for x in p["sightings"]),
                  f"{p['first_time']:.1f}-{p['last_time']:.1f}",
                  p["line"])
    console.print(t)
    if len(people) > 50:
        console.print(f"[dim]the first 50 of {len(people)} shown; people.json has every one[/]")
    console.print(f"wrote {cfg.out}: people.json, people.csv, people.txt, people.html", highlight=False)


command_with_config(app, "link", LinkConfig, [
    parameter("folders", typer.Argument(..., help="`par track` output folders, one per camera (NAME=FOLDER names "
                                        "one), or a folder of several cameras (OUT/<name>/ each)"), list[str]),
    parameter("out", typer.Option(..., "--out", "-o",
                                  help="folder to write people.json, people.csv, people.txt, people.html"), Path),
    parameter("offset", typer.Option([], "--offset", help="NAME=SECONDS: that camera's video started this much later "
                                     "than the others (recorded folders); repeatable"), list[str]),
    CONFIG,
], _link, "The same person across cameras: link the tracks of several cameras' `par track` folders into people.")


command_with_config(app, "track", TrackConfig, [
    parameter("sources", typer.Argument(None, help="video files (mp4/avi/mkv/mov/webm), folders of numbered frames "
                                        "(MOTChallenge img1/), or live: rtsp:// rtmp:// http(s):// udp:// tcp:// "
                                        "srt:// streams and capture devices (/dev/video0); NAME=SOURCE names one"),
              Optional[list[str]]),
    CHECKPOINT,
    parameter("out", typer.Option(..., "--out", "-o", help="output folder"), Path),
    parameter("alert", typer.Option([], "--alert", help="a rule that raises an alert (recorded or live), in the "
                                    "`par search` grammar: conditions joined by commas or 'and' (\"top color = red, "
                                    "backpack = no\"); fires on each person's final record; repeatable"),
              list[str]),
    CONFIG,
], _track, "People in footage, recorded or live: detect, track, and name each person's attributes over their whole "
           "track.")


def _bench(own: dict[str, Any], given: dict[str, Any]) -> None:
    from par_pipeline.tools.bench import run_bench

    cfg = _command_config("bench", own, given, {})
    results, rows = run_bench(cfg, lambda msg: console.print(f"[dim]{msg}[/]"))
    t = Table(title=f"benchmark ({results['machine']['where']})", title_justify="left")
    for col, justify in (("measure", "left"), ("value", "right"), ("target", "right")):
        t.add_column(col, justify=justify)
    for row in rows:
        t.add_row(*row)
    console.print(t)
    console.print(f"wrote {cfg.out}/bench.json")


command_with_config(app, "bench", BenchConfig, [CONFIG], _bench,
                    "Throughput figures as ratios in one run (pipeline vs model-only, store bytes, loader, sweep); "
                    "bench.json.")


def run(argv: Optional[list[str]] = None) -> int:
    """Run `par` with these arguments (default: the process's) and return the exit code: 0, 2 for a ParError (one
    line on stderr) or a usage error, 130 when interrupted. Tests call this in-process."""
    try:
        code = app(args=argv, prog_name="par", standalone_mode=False)
    except KeyboardInterrupt:  # whichever Typer release: Ctrl-C is 130 (some convert it, some pass it on)
        code = INTERRUPTED
    except ParError as exc:
        err_console.print(f"[bold red]error:[/] {escape(one_line(exc))}", highlight=False, soft_wrap=True)
        return 2
    except UsageError as exc:
        from typer import rich_utils

        rich_utils.rich_format_error(exc)
        return exc.exit_code
    except typer.Abort as exc:
        if not isinstance(exc.__cause__, KeyboardInterrupt):  # click's Abort of a Ctrl-C in older releases
            err_console.print("aborted", highlight=False)
            return 1
        code = INTERRUPTED
    if code == INTERRUPTED:
        command = next((a for a in (argv if argv is not None else sys.argv[1:]) if not a.startswith("-")), "")
        err_console.print(f"[yellow]interrupted[/]{RESUME_HINTS.get(command, '')}", highlight=False)
    return code if isinstance(code, int) else 0


RESUME_HINTS = {
    "extract": "; re-run the same command to resume",
    "train": "; `par train --out RUN --resume` continues it from its last committed epoch (its options are in "
             "RUN/config.json)",
    "ablation": "; re-run the same command to continue the sweep (finished points are reused)",
    "track": "; a live run writes every output before it stops, a recorded file's run writes none: run it again",
}
INTERRUPTED = 130  # Typer turns Ctrl-C into this exit code; a live run stopped by Ctrl-C exits with it too
TERMINATED = 143  # a live run stopped by SIGTERM (128 + 15), after writing every output


def main() -> None:
    sys.exit(run())


if __name__ == "__main__":
    main()
