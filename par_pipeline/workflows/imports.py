"""`par import vtf-par`: the authors' released VTF-PAR checkpoint as a par run folder, which `par eval`, `par
predict` and `par report` then use unchanged.

The folder holds `best.safetensors` + `best.json` as `par train` writes them, marked as imported (the source file's
name and sha256, and whether the store's CLIP was checked to be the one the checkpoint needs). The model is the
reference's, exactly: par's VTF-PAR with the `vtf-par` architecture, the checkpoint's tensors mapped one to one
(`model.reference`), and the store's `words` text features as its text input, which is what the reference feeds
its text embedding. The rest of the run's settings (threshold, evaluation frames) come from the recipe it names.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..config import ImportConfig, configure
from ..data.texts import attribute_texts
from ..errors import ParError
from ..model.block import load_model_config
from ..model.checkpoint import checkpoint_files
from ..model.fusion import VTFPAR
from ..model.reference import check_shapes, read_reference_state, reference_to_par
from ..outputs import file_sha256, replace_dir
from ..resources import load_json
from ..run import checkpoint_meta
from ..store.reader import TokenStore

IMPORTED_KIND = "imported run"
REFERENCE_CLIP = "ViT-B-16-quickgelu"  # what the reference ran: clip.load("ViT-B/16"), OpenAI's weights, QuickGELU


def is_reference_clip(attrs: dict[str, Any]) -> bool:
    """Was this store made with the reference's CLIP (OpenAI's ViT-B/16 weights, by sha256 or open_clip's tag)?"""
    weights = attrs["weights"]
    known = load_json("weights", "clip")["weights"]
    return attrs["clip_model"] == REFERENCE_CLIP and (
        (weights.get("kind") == "file" and weights.get("sha256") in known)
        or (weights.get("kind") == "open_clip-tag" and weights.get("tag") == "openai"))


def import_reference(cfg: ImportConfig) -> dict[str, Any]:
    """Write the run folder `cfg.out`; returns its best.json record."""
    source = Path(cfg.checkpoint)
    state, info = read_reference_state(source)
    mapped, sizes = reference_to_par(state, str(source))
    store = TokenStore(cfg.store)
    a = store.attrs
    if sizes["attributes"] != len(store.attribute_names):
        raise ParError(f"{source}: a checkpoint of {sizes['attributes']} attributes, but {cfg.store} holds "
                       f"{len(store.attribute_names)} ({a['schema']}); give a store of the dataset it was trained on "
                       f"(MARS: 43 attributes, Duke: 36)")
    if sizes["input_dim"] != store.dim:
        raise ParError(f"{source}: its embeddings take {sizes['input_dim']}-d tokens, {cfg.store} holds {store.dim}-d "
                       f"ones; give a store of CLIP ViT-B/16 tokens")
    if a["texts"]["words"] != attribute_texts(store.schema)["words"]:
        raise ParError(f"{cfg.store}: its 'words' text features are not the reference's attribute words; extract "
                       f"with a shipped schema (mars, duke)")
    if not cfg.allow_other_clip and not is_reference_clip(a):
        raise ParError(f"{cfg.store}: made with CLIP {a['clip_model']} and weights {a['weights']}, but the checkpoint "
                       f"needs OpenAI's ViT-B/16 ({REFERENCE_CLIP}, ViT-B-16.pt or --pretrained openai); extract "
                       f"with those (--allow-other-clip imports anyway: the numbers then mean nothing)")
    train_cfg, recipe = configure("train", cfg.recipe, [("par import", {"store": cfg.store, "out": cfg.out})])
    mcfg = load_model_config(train_cfg.model, fusion=True, text_tokens=True, drop_path=train_cfg.drop_path,
                             temporal="mean", input_dim=store.dim, num_attributes=sizes["attributes"])
    if mcfg.hidden != sizes["hidden"]:
        raise ParError(f"{source}: its fusion width is {sizes['hidden']}, model {mcfg.name} is {mcfg.hidden} wide")
    text = torch.from_numpy(store.text_features("words"))
    model = VTFPAR(mcfg, text)
    check_shapes(mapped, model, str(source))
    model.load_state_dict({**mapped, "text_features": text}, strict=True)
    meta = {**checkpoint_meta(train_cfg, recipe, store, {"kind": "imported"}),
            "epoch": info.get("epoch"), "metrics": None, "val_metrics": None,
            "imported": {"format": "VTF_PAR TransformerClassifier", "file": source.name,
                         "sha256": file_sha256(source), "clip_checked": not cfg.allow_other_clip,
                         "unused_vit_tensors": sum(k.startswith("vit.") for k in state)}}
    store.close()
    files = checkpoint_files(model, "best", meta)

    def build(folder: Path) -> None:
        for name, write in files.items():
            write(folder / name)

    replace_dir(Path(cfg.out), IMPORTED_KIND, build)
    return meta
