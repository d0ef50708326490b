"""The two key layouts a semantic-encoder checkpoint may come in, recognised from its keys.

- `reference`: the reference repository's stand-in encoder, which our module mirrors:
  `init_bn.1.*` (BatchNorm2d inside a transpose wrapper), the mel window and filterbank saved
  as `front_end.0.*`.
- `midashenglm`: MiDashengLM's audio encoder (Hugging Face remote code), what the published
  `semantic_encoder.pth` was most likely saved from: a bare BatchNorm2d `init_bn.*` (with
  `num_batches_tracked`), no front-end keys (non-persistent buffers there), and LayerScale
  `blocks.N.ls1.gamma` / `ls2.gamma` when it was built with `init_values`.

`adapt_encoder_state` translates a state dict into our module's names and switches on
LayerScale when the file has it, so that the strict load that follows uses every tensor of
the file and fills every parameter of ours. The encoder's front-end buffers, computed from
the config (window, mel filterbank), may be absent in either layout: `computed_buffers`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping

import torch
import torchaudio
from torch import nn

from losatok.semantic import DashengEncoder

log = logging.getLogger(__name__)

REFERENCE = "reference"
MIDASHENGLM = "midashenglm"
_LAYER_SCALE = re.compile(r"blocks\.\d+\.ls[12]\.gamma$")


class LayoutError(ValueError):
    """A state dict mixes the two encoder layouts."""


def detect_encoder_layout(keys: list[str] | set[str], prefix: str = "") -> str | None:
    """`REFERENCE`, `MIDASHENGLM`, or None when no encoder BatchNorm key lies under `prefix`."""
    ours = f"{prefix}init_bn.1.weight" in keys
    theirs = f"{prefix}init_bn.weight" in keys
    if ours and theirs:
        raise LayoutError(
            f"keys under {prefix!r} mix both encoder layouts ({prefix}init_bn.1.* and {prefix}init_bn.*)"
        )
    return REFERENCE if ours else MIDASHENGLM if theirs else None


def adapt_encoder_state(
    module: nn.Module, state: Mapping[str, torch.Tensor]
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Translate every Dasheng encoder inside `module` found in `state` to our key names.

    Returns the translated state and {encoder prefix: layout} for each encoder the state
    holds. LayerScale is switched on in an encoder whose keys carry `ls1`/`ls2` gammas.
    """
    state = dict(state)
    layouts: dict[str, str] = {}
    for name, encoder in module.named_modules():
        if not isinstance(encoder, DashengEncoder):
            continue
        prefix = f"{name}." if name else ""
        layout = detect_encoder_layout(state.keys(), prefix)
        if layout is None:
            continue
        layouts[prefix] = layout
        if layout == MIDASHENGLM:
            bn = f"{prefix}init_bn."
            state = {
                (f"{bn}1.{key[len(bn) :]}" if key.startswith(bn) else key): value
                for key, value in state.items()
            }
        if any(k.startswith(prefix) and _LAYER_SCALE.search(k[len(prefix) :]) for k in state):
            encoder.enable_layer_scale()
        log.info("semantic encoder weights under %r are in the %s layout", prefix or "(root)", layout)
    return state, layouts


def computed_buffers(module: nn.Module) -> set[str]:
    """Names of the semantic encoders' front-end buffers inside `module` (STFT window, mel
    filterbank): built from the config alone, and non-persistent in MiDashengLM, so a file may
    leave them out. Other buffers (the acoustic front end, the iSTFT window) stay required."""
    names = set()
    for name, encoder in module.named_modules():
        if not isinstance(encoder, DashengEncoder):
            continue
        prefix = f"{name}.front_end." if name else "front_end."
        for sub_name, sub in encoder.front_end.named_modules():
            path = f"{prefix}{sub_name}." if sub_name else prefix
            if isinstance(sub, torchaudio.transforms.Spectrogram):
                names.add(f"{path}window")
            elif isinstance(sub, torchaudio.transforms.MelScale):
                names.add(f"{path}fb")
    return names
