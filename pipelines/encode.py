"""The encode stage: length-sorted, frame-budgeted batches through LoSATok, valid frames only.

`SegmentEncoder` is a plain class (tests drive it without Ray); the Ray actor in
`pipelines.dataflow` is a thin shell that builds one per accelerator and keeps it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch

from losatok import LoSATok, collate_waveforms, load_model, preset
from pipelines.config import FieldsConfig, ModelConfig
from pipelines.records import EncodedSegment, EncodeFailure

log = logging.getLogger(__name__)


def frames_of(n_samples: int, hop: int = 160, patch_frames: int = 4) -> int:
    """Latent frames LoSATok gives `n_samples` of audio (as `LoSATok.frames_for`)."""
    return (n_samples // hop + 1) // patch_frames


def plan_batches(frame_counts: Sequence[int], max_frames: int) -> list[list[int]]:
    """Group items into batches whose padded size (count x longest) stays within `max_frames`.

    Items are taken longest first, so each batch holds similar lengths and padding stays
    small; an item longer than the budget gets a batch of its own. Returns lists of indices.
    """
    order = sorted(range(len(frame_counts)), key=lambda i: (-frame_counts[i], i))
    batches: list[list[int]] = []
    for index in order:
        if batches and frame_counts[batches[-1][0]] * (len(batches[-1]) + 1) <= max_frames:
            batches[-1].append(index)  # the batch's first item is its longest
        else:
            batches.append([index])
    return batches


# an encode batch's default budget (count x longest, in 25 Hz latent frames) by device. A GPU
# wants large batches (600 s of audio). On CPU, batches past ~30 s of audio run slower, not faster:
# the tiny model encodes 810 audio s/s in batches of 6 x 5 s against 600 in batches of 120 x 5 s
# on this 2-core machine, and the official model on CPU is no faster past that
# (bench/encoder_throughput.py --presets tiny --batch-sizes 1 2 6 12 24 48 120)
BATCH_FRAMES = {"cuda": 25 * 600, "cpu": 25 * 30}


def batch_budget(max_frames: int | None, device: torch.device) -> int:
    """`max_frames` when given, else the default budget of `device`'s kind (BATCH_FRAMES)."""
    return max_frames or BATCH_FRAMES.get(device.type, BATCH_FRAMES["cuda"])


def build_model(config: ModelConfig) -> LoSATok:
    """The tokenizer every actor uses: from a checkpoint, the Hub (official), or seeded so all actors agree."""
    torch.manual_seed(config.seed)
    return load_model(
        config.checkpoint,
        preset(config.preset),
        config.semantic_encoder,
        variant=config.variant,
        revision=config.revision,
    )


class SegmentEncoder:
    """Loads the model once and encodes lists of waveforms into storage-ready arrays."""

    def __init__(
        self,
        model: ModelConfig,
        fields: FieldsConfig,
        max_frames: int | None = None,
        device: str | None = None,
    ) -> None:
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = build_model(model).to(self.device)
        self.bf16 = model.bf16
        self.fields = fields
        self.dtype = np.dtype(fields.dtype)
        self.max_frames = batch_budget(max_frames, self.device)  # None: by device

    def field_names(self) -> list[str]:
        names = ["latent"]
        names += [n for n in ("logvar", "semantic_low", "semantic") if getattr(self.fields, n)]
        return names

    def encode(self, waves: Sequence[np.ndarray]) -> list[EncodedSegment | EncodeFailure]:
        """Encode (S_i,) float32 16 kHz waveforms; one result per input, in input order."""
        counts = [frames_of(len(w)) for w in waves]
        results: list[EncodedSegment | EncodeFailure] = [EncodeFailure("not encoded")] * len(waves)
        for batch in plan_batches(counts, self.max_frames):
            self._encode_batch([waves[i] for i in batch], batch, results)
        return results

    def _encode_batch(self, waves: list[np.ndarray], indices: list[int], results: list) -> None:
        """Encode one batch; on out-of-memory split it in halves, down to single segments."""
        try:
            outputs = self._run(waves)
        except torch.OutOfMemoryError as err:
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            if len(waves) == 1:
                results[indices[0]] = EncodeFailure(f"out of memory encoding {len(waves[0])} samples: {err}")
                return
            half = len(waves) // 2
            log.warning("out of memory on a batch of %d segments; splitting it", len(waves))
            self._encode_batch(waves[:half], indices[:half], results)
            self._encode_batch(waves[half:], indices[half:], results)
            return
        for index, output in zip(indices, outputs, strict=True):
            results[index] = output

    def _run(self, waves: list[np.ndarray]) -> list[EncodedSegment | EncodeFailure]:
        batch, lengths = collate_waveforms([torch.from_numpy(np.ascontiguousarray(w)) for w in waves])
        result = self.model.encode(batch.to(self.device), lengths.to(self.device), bf16=self.bf16)
        names = {
            "latent": "z",
            "logvar": "logvar",
            "semantic_low": "semantic_low",
            "semantic": "semantic_high",
        }
        outputs: list[EncodedSegment | EncodeFailure] = []
        for row in range(len(waves)):
            item = result.item(row)
            arrays = {}
            failure = None
            for name in self.field_names():
                values = item[names[name]]
                if not bool(torch.isfinite(values).all()):
                    failure = EncodeFailure(f"encoder output {name} holds NaN or Inf")
                    break
                with np.errstate(over="ignore"):  # overflow is checked on the next line
                    stored = values.cpu().numpy().astype(self.dtype)
                if not np.isfinite(stored).all():  # e.g. float16 overflow past 65504
                    failure = EncodeFailure(
                        f"{name} overflows {self.dtype} (max |x| = {float(values.abs().max()):.3g})"
                    )
                    break
                arrays[name] = stored
            outputs.append(failure or EncodedSegment(arrays, int(result.frames[row])))
        return outputs
