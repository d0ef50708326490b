from __future__ import annotations

import pytest
import torch

from losatok import LoSATok, tiny


@pytest.fixture
def tiny_model() -> LoSATok:
    torch.manual_seed(0)
    return LoSATok(tiny()).eval()
