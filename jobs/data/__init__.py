"""Training data: latent datasets read as batches with an exactly-once, elastic position.

- `config`: `LoaderConfig` (the Hydra `data:` group), `DatasetSpec` (one dataset of a mixture), `Filters`.
- `sources`: opening and checking the datasets (tokenizer, widths, schema), filters, normalisation.
- `plan`: the epoch as units, progress, segments and batches; numpy arrays, no object per sample.
- `batches`: `LatentBatches`, the IterableDataset that reads one rank's planned batches.
- `loader`: `LatentLoader`, the public loader with `state_dict()` / `load_state_dict()`.
"""

from jobs.data.batches import Batch, LatentBatches
from jobs.data.config import DatasetSpec, Filters, LoaderConfig
from jobs.data.loader import LatentLoader
from jobs.data.sources import DatasetMismatchError

__all__ = [
    "Batch",
    "DatasetMismatchError",
    "DatasetSpec",
    "Filters",
    "LatentBatches",
    "LatentLoader",
    "LoaderConfig",
]
