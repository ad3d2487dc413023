"""The run folder: the one owner of its layout, its checkpoints and how they are committed and read back.

    RUN/config.json             training config, model config, recipe and overrides
    RUN/best.safetensors/.json  the selected epoch (test-selected as the reference, or val-selected)
    RUN/last.safetensors/.json  the latest epoch; RUN/last.state.pt: optimiser, schedule, RNG, history
    RUN/log.jsonl               one line per epoch
    RUN/eval-<split>[...]/      `par eval` outputs
    RUN/trackers.json           with --log-to: the experiment trackers' runs (par_pipeline.experiments)

An epoch's files are committed as one unit: all are written into RUN/.pending/, then a COMMIT file naming them,
then they are moved into place. A crash before COMMIT leaves the previous epoch's set untouched (the pending
folder is discarded on the next open); a crash after it is rolled forward on the next open. Every checkpoint
JSON carries the sha256 of its weights (and `last.json` of the state file); loading verifies them, so a damaged
or mixed set is an error, never a model.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, NamedTuple

from .config import as_dict
from .deploy import export_folder
from .errors import ParError
from .outputs import atomic_write, fault_point, file_sha256, fsync_dir, io_errors, remove_own, write_json
from .store.format import TOKEN_KEYS, check_identity

if TYPE_CHECKING:
    from .config import TrainConfig
    from .store.reader import TokenStore

CHECKPOINT_FORMAT = "par-checkpoint"
CHECKPOINT_VERSION = 2
PENDING, COMMIT = ".pending", "COMMIT"
LOG_FILE = "log.jsonl"
RUN_KIND = "run"


class RunFolder:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    # --- layout ---
    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    def checkpoint_json(self, which: str) -> Path:
        return self.path / f"{which}.json"

    def eval_dir(self, split: str, frames: int | None = None, sampling: str = "fixed", seed: int = 0) -> Path:
        """Where `par eval` writes by default, and where `par report` looks."""
        tag = f"eval-{split}" + (f"-T{frames}" if frames else "") + (f"-random-s{seed}" if sampling == "random" else "")
        return self.path / tag

    def exists(self) -> bool:
        return self.checkpoint_json("last").is_file()

    # --- creating and committing ---
    def write_config(self, config: dict[str, Any]) -> None:
        write_json(self.config_path, config)

    def recover(self) -> None:
        """Finish an interrupted commit (COMMIT present: move its files into place) or discard an unfinished one."""
        pending = self.path / PENDING
        if not pending.exists():
            return
        commit = pending / COMMIT
        with io_errors(self.path, "recover"):
            if commit.exists():
                for name in json.loads(commit.read_text())["files"]:
                    if (pending / name).exists():
                        os.replace(pending / name, self.path / name)
                        fault_point(f"roll-forward:{name}")
                fsync_dir(self.path)
            remove_own(pending)

    def commit(self, files: dict[str, Callable[[Path], None]]) -> None:
        """Write every file of one epoch into the pending folder, mark the set complete, then move it into place."""
        pending = self.path / PENDING
        with io_errors(self.path):
            remove_own(pending)
            pending.mkdir()
            for name, write in files.items():
                atomic_write(pending / name, write)
                fault_point(f"pending:{name}")
            write_json(pending / COMMIT, {"files": list(files)})
            fault_point("committed")
        self.recover()

    def read_log(self) -> list[dict[str, Any]]:
        """The committed epochs' records, in order (log.jsonl)."""
        path = self.path / LOG_FILE
        try:
            return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        except (OSError, ValueError):
            raise ParError(f"{path}: missing or damaged (it is written with every committed epoch); restore it, or "
                           f"train the run again") from None

    def read_config(self) -> dict[str, Any]:
        try:
            return json.loads(self.config_path.read_text())
        except (OSError, ValueError):
            raise ParError(f"{self.config_path}: missing or damaged; this folder is not a resumable run - start a new "
                           f"--out") from None


# --- checkpoint files ---------------------------------------------------------------------------------------------

def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A run folder (-> best), a .json or a .safetensors path -> the checkpoint's JSON."""
    path = Path(path)
    if path.suffix.lower() in (".zarr", ".h5", ".hdf5") or (path / "zarr.json").is_file():
        raise ParError(f"{path}: is a token store (`par extract`), not a checkpoint; give the run folder that "
                       f"`par train {path} --out RUN` wrote (or its best.json / last.json)")
    if export_folder(path) is not None:
        raise ParError(f"{path}: is a `par export` folder (ONNX graphs for par predict and par track); this command "
                       f"needs the checkpoint it was exported from (its export.json names it)")
    if path.is_dir():
        path = path / "best.json"
    elif path.suffix == ".safetensors":
        path = path.with_suffix(".json")
    if not path.is_file():
        raise ParError(f"{path}: checkpoint not found; give a run folder from `par train` or its best.json / last.json")
    return path


def read_checkpoint_meta(path: str | os.PathLike) -> tuple[Path, dict[str, Any]]:
    meta_path = resolve_checkpoint(path)
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        raise ParError(
            f"{meta_path}: not a valid checkpoint (damaged JSON); use another checkpoint or retrain"
        ) from None
    if not isinstance(meta, dict) or meta.get("format") != CHECKPOINT_FORMAT:
        raise ParError(f"{meta_path}: not a par checkpoint; give the .json written by `par train`")
    if meta.get("version") != CHECKPOINT_VERSION:
        raise ParError(f"{meta_path}: checkpoint version {meta.get('version')} is not supported (this par reads "
                       f"{CHECKPOINT_VERSION}); retrain with this par")
    return meta_path, meta


def verify_file(path: Path, sha256: str, what: str) -> None:
    with io_errors(path, "read"):
        if not path.is_file():
            raise ParError(f"{path}: {what} is missing; the checkpoint is incomplete - use another one or retrain")
        if file_sha256(path) != sha256:
            pending = path.parent / PENDING / COMMIT
            hint = (
                "an epoch was being committed when it stopped: run the same `par train ... --resume` to finish it"
                if pending.exists()
                else "the file is damaged or from another checkpoint - use another one or retrain"
            )
            raise ParError(f"{path}: {what} does not match the sha256 its checkpoint records; {hint}")


def check_store_matches(meta: dict[str, Any], store_identity: dict[str, Any], store_path: str) -> None:
    check_identity(meta["store_identity"], store_identity, TOKEN_KEYS, "token store", store_path,
                   f"the checkpoint {meta.get('_path', '')} needs a store extracted with the same CLIP model, weights, "
                   f"precision, preprocessing, dtype, schema and texts")


def selection_label(meta: dict[str, Any]) -> str:
    """How a checkpoint was chosen, for every report: test-set selection is the reference's, and is said so."""
    if meta.get("imported"):
        return f"imported from {meta['imported']['file']} (the authors' checkpoint, selected by them)"
    which = Path(meta.get("weights", "")).stem
    if which == "last":
        return f"last epoch ({meta['epoch']})"
    split = meta.get("selected_on", "test")
    label = ", test-selected as the reference" if split == "test" else ""
    return f"best on the {split} split (epoch {meta['epoch']}{label})"


class Reported(NamedTuple):
    """One row of `par report`: its label, the metrics, and the evaluation folder they were read from (None: the
    figures training recorded in the checkpoint, with no predictions beside them)."""
    label: str
    metrics: dict[str, Any]
    eval_dir: Path | None


def reported_results(path: str | os.PathLike) -> list[Reported]:
    """What `par report` shows for a path, labelled: an evaluation folder's metrics.json; or, for a run folder, the
    selected checkpoint as `par eval` measured it by default (else as training measured it) and the last epoch."""
    path = Path(path)
    metrics_file = path / "metrics.json"
    if metrics_file.is_file():
        m = _read_json(metrics_file)
        return [Reported(f"{path.name} ({m.get('selection', 'checkpoint')})", m, path)]
    best = path / "best.json"
    if not best.is_file():
        raise ParError(f"{path}: neither a run folder from `par train` nor an evaluation folder from `par eval`")
    _, meta = read_checkpoint_meta(best)
    evaluated = RunFolder(path).eval_dir(meta.get("eval_split", "test")) / "metrics.json"
    from_eval = evaluated.is_file() and Path(_read_json(evaluated).get("checkpoint", "")).resolve() == best.resolve()
    if not from_eval and meta["metrics"] is None:  # an imported checkpoint: nothing measured yet
        raise ParError(f"{path}: no results yet; run `par eval STORE --checkpoint {path}` first")
    label = f"{path.name}: {selection_label(meta)}, {'par eval' if from_eval else 'from training'}"
    rows = [Reported(label, _read_json(evaluated), evaluated.parent) if from_eval
            else Reported(label, _as_trained(meta), None)]
    if (path / "last.json").is_file():  # a trained run (an imported one has its one checkpoint)
        _, last = read_checkpoint_meta(path / "last.json")
        if from_eval or last["epoch"] != meta["epoch"]:  # the last epoch beside it, unless it is the very same row
            rows.append(Reported(f"{path.name}: {selection_label(last)}", _as_trained(last), None))
    return rows


def _as_trained(meta: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's figures as training measured them, with the split and frames they were measured on."""
    return {**meta["metrics"], "split": meta.get("eval_split", "test"), "frames": meta.get("eval_frames")}


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        raise ParError(f"{path}: missing or damaged JSON; re-run the command that wrote it") from None


def checkpoint_meta(cfg: TrainConfig, recipe: dict[str, Any], store: TokenStore, fusion_init: dict[str, Any]
                    ) -> dict[str, Any]:
    """What every checkpoint JSON of a run records besides its epoch and figures (README: run folder)."""
    a = store.attrs
    return {"recipe": recipe, "train_config": as_dict(cfg), "schema": a["schema"],
            "schema_definition": a["schema_definition"], "attributes": store.attribute_names,
            "group_boundaries": a["group_boundaries"], "groups": a["groups"], "store_identity": store.identity,
            "store_path": cfg.store, "frames": cfg.frames, "eval_frames": cfg.eval_frames or cfg.frames,
            "eval_sampling": cfg.eval_sampling, "seed": cfg.seed, "threshold": cfg.threshold,
            "fusion_init": fusion_init, "selected_on": cfg.selection, "eval_split": cfg.eval_split}


def default_eval_dir(checkpoint: str, split: str, frames: int | None, sampling: str | None, seed: int | None) -> Path:
    meta_path, meta = read_checkpoint_meta(checkpoint)
    return RunFolder(meta_path.parent).eval_dir(split, frames, sampling or meta.get("eval_sampling", "fixed"),
                                                meta.get("seed", 0) if seed is None else seed)
