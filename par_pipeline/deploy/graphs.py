"""The two graphs of an export, as torch modules and as ONNX files.

- encoder: uint8 images [B, 3, S, S] (prepared as the store's frames were: padded, resized) -> normalised -> CLIP's
  CLS + patch tokens after ln_post, times proj [B, N, D] in float32 (rounding to the store's dtype stays outside,
  in the runtime, as `par predict` does it);
- fusion: tokens [B, N, D] (the mean over a tracklet's frames) or [B, T, N, D] (a temporal model) -> sigmoid
  probabilities [B, A], the text features inside as constants.

Both have a dynamic batch axis (torch.export's exporter, checked at batch 1 and N by `par export`)."""
from __future__ import annotations

import contextlib
import copy
import io
import logging
from pathlib import Path

import torch

from ..data.preprocess import Preprocess, normalize
from ..errors import ParError
from ..model.clip import frame_tokens

OPSET = 18  # what torch's exporter writes best; ONNX Runtime >= 1.14 and OpenVINO >= 2023 read it


class EncoderGraph(torch.nn.Module):
    def __init__(self, visual: torch.nn.Module, preprocess: Preprocess):
        super().__init__()
        self.visual, self.preprocess = visual, preprocess

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return frame_tokens(self.visual, normalize(images, self.preprocess)).float()


class FusionGraph(torch.nn.Module):
    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = copy.copy(model)  # the checkpoint's model itself stays as it computes in PyTorch
        self.model.exporting = True

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.model(tokens).float())


def import_onnx_export() -> None:
    """torch's ONNX exporter needs onnx and onnxscript (the `onnx` extra)."""
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise ParError(f"par export needs {exc.name}: pip install 'par[onnx]' (onnx, onnxscript, onnxruntime)"
                       ) from None


def write_graph(module: torch.nn.Module, example: torch.Tensor, path: Path, input_name: str, output_name: str) -> None:
    """`module` as one self-contained ONNX file (weights inside: both graphs are far below protobuf's 2 GB)."""
    import_onnx_export()
    batch = torch.export.Dim("batch", min=1, max=65536)
    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), torch.no_grad():  # the exporter prints its steps
            # the exporter's optimiser stays on: without it the int8 graphs run at fp32's speed (measured: ONNX
            # Runtime int8 7.9 vs 25 crops/s, OpenVINO's 9.8 vs 38), their matrix products left unfused
            program = torch.onnx.export(module.eval(), (example,), dynamo=True, input_names=[input_name],
                                        output_names=[output_name], opset_version=OPSET,
                                        dynamic_shapes=({0: batch},), verbose=False)
            program.save(str(path), external_data=False)
    except Exception as exc:  # the exporter's failures come in many types; the first line says which op
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise ParError(f"cannot export the {path.stem} graph to ONNX ({first}); report it with the checkpoint's "
                       f"model_config") from None
    finally:
        quiet.setLevel(level)
