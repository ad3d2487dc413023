"""Reading experiment trackers back the trackers' own ways (tests of `--log-to`): TensorBoard's EventAccumulator,
MlflowClient, W&B's offline run files; and what they should hold, from a run folder's log.jsonl and config.json."""
from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np


def expected_curve(run: Path) -> dict[str, list[tuple[int, float]]]:
    """log.jsonl as tag -> [(epoch, value)]: nested figures named a/b, no nulls."""
    curve: dict[str, list[tuple[int, float]]] = {}

    def add(epoch: int, name: str, value) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                add(epoch, f"{name}/{k}", v)
        elif value is not None:
            curve.setdefault(name, []).append((epoch, float(value)))

    for line in (run / "log.jsonl").read_text().splitlines():
        record = json.loads(line)
        for key, value in record.items():
            if key != "epoch":
                add(record["epoch"], key, value)
    return curve


def expected_params(run: Path) -> dict[str, str]:
    """config.json's options, recipe and overrides, and the store's identity (last.json), as dotted names."""
    config = json.loads((run / "config.json").read_text())
    identity = json.loads((run / "last.json").read_text())["store_identity"]
    flat: dict[str, str] = {}

    def walk(value, name: str) -> None:
        if isinstance(value, dict) and value:
            for k, v in value.items():
                walk(v, f"{name}.{k}" if name else k)
        else:
            flat[name] = value if isinstance(value, (bool, int, float, str)) else json.dumps(value)

    walk({"train": config["train"], "recipe": config["recipe"], "store": identity}, "")
    assert flat["train.lr"] == config["train"]["lr"] and "train.log_to" in flat
    return flat


def tensorboard_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def tensorboard_hparams(folder: Path) -> dict:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    acc = EventAccumulator(str(folder))
    acc.Reload()
    content = acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    values = HParamsPluginData.FromString(content).session_start_info.hparams
    return {k: getattr(v, v.WhichOneof("kind")) for k, v in values.items()}


def wandb_records(run: Path, run_id: str) -> list:
    """Every record of the W&B run `run_id` under RUN/wandb, from its offline run files (W&B's transaction log:
    a 7-byte header, then LevelDB-log framed protobuf records in 32 KiB blocks), oldest file first."""
    from wandb.proto.wandb_internal_pb2 import Record

    out = []
    for path in sorted((run / "wandb").glob(f"offline-run-*-{run_id}*/run-{run_id}.wandb"), key=os.path.getmtime):
        data, pos, buf = path.read_bytes(), 7, b""
        assert data[:4] == b":W&B"
        while pos + 7 <= len(data):
            if 32768 - pos % 32768 < 7:
                pos += 32768 - pos % 32768
                continue
            _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
            buf, pos = buf + data[pos + 7:pos + 7 + length], pos + 7 + length
            if kind in (1, 4):  # a whole record, or the last part of one
                out.append(Record.FromString(buf))
                buf = b""
    return out


def wandb_history(run: Path, run_id: str) -> dict[str, list[tuple[int, float]]]:
    """The run's history as W&B keeps it when its offline files are synced in order: a step must be above the last
    one (W&B drops the others), so a resumed session's steps count only after the killed session's last."""
    curve: dict[str, list[tuple[int, float]]] = {}
    last = 0
    for rec in wandb_records(run, run_id):
        if rec.WhichOneof("record_type") == "history":
            items = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in rec.history.item}
            if items["_step"] <= last:
                continue
            last = items["_step"]
            for k, v in items.items():
                if not k.startswith("_"):
                    curve.setdefault(k, []).append((items["_step"], float(v)))
    return curve


def wandb_config_and_summary(run: Path, run_id: str) -> tuple[dict, dict, list]:
    config, summary, runs = {}, {}, []
    for rec in wandb_records(run, run_id):
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            runs.append(rec.run)
        if kind in ("config", "run"):
            items = rec.config.update if kind == "config" else rec.run.config.update
            config.update({i.key: json.loads(i.value_json) for i in items if i.key != "_wandb"})
        if kind == "summary":
            summary.update({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in rec.summary.update})
    return config, summary, runs


def mlflow_curve(client, run_id: str) -> dict[str, list[tuple[int, float]]]:
    keys = client.get_run(run_id).data.metrics
    return {k: sorted((m.step, m.value) for m in client.get_metric_history(run_id, k)) for k in keys}


def trackers_of(run: Path) -> dict:
    return json.loads((run / "trackers.json").read_text())["trackers"]


def same_curve(got: dict, want: dict, rel: float = 0.0) -> None:
    """Each of log.jsonl's figures at each epoch exactly once (TensorBoard keeps float32: rel 1e-7)."""
    assert sorted(got) == sorted(want), (sorted(set(got) ^ set(want)))
    for tag, points in want.items():
        steps = [s for s, _ in got[tag]]
        assert steps == [s for s, _ in points], (tag, steps)
        np.testing.assert_allclose([v for _, v in got[tag]], [v for _, v in points], rtol=rel, err_msg=tag)
