"""The semantic encoder's chunking: every input length encodes, and chunking changes no token."""

import pytest
import torch

from losatok import collate_waveforms
from losatok.features import frame_mask, pad_batch_for_stft
from losatok.semantic import DashengEncoder, valid_tokens

CHUNK_SAMPLES = 1008 * 160  # 161 280 samples: one 10.08 s chunk of mel frames


def _per_mel_chunk_reference(enc: DashengEncoder, wav: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """The earlier algorithm (cut the mel into 1008-frame chunks, patch-embed each), for lengths
    whose last mel chunk holds at least one patch: the fix must not change any of its outputs."""
    mel = enc.mel(wav, lengths)
    n_valid = valid_tokens(lengths, enc.config)
    outputs, start = [], 0
    for chunk in mel.split(enc.config.semantic_chunk_frames, dim=-1):
        x = enc.patch_embed(chunk)  # (B, C, 1, t)
        t = x.shape[-1]
        x = (x + enc.time_pos_embed[..., :t] + enc.freq_pos_embed).flatten(2).transpose(1, 2)
        valid = frame_mask(n_valid - start, t)
        mask = None if bool(valid.all()) else valid[:, None, None, :] | ~valid[:, None, :, None]
        for block in enc.blocks:
            x = block(x, mask)
        outputs.append(enc.norm(x))
        start += t
    return torch.cat(outputs, dim=1)


@pytest.mark.parametrize("chunks", [1, 2])
def test_lengths_across_each_chunk_boundary_encode_and_keep_earlier_outputs(tiny_model, chunks):
    """Lengths whose padded mel ends 1-3 frames into a new chunk used to crash the patch conv."""
    torch.manual_seed(chunks)
    # the model's STFT padding (512 samples) adds frames: mel frames = (L + 512) // 160 + 1, so
    # L = k x 161 280 - 512 + d sweeps the mel length across the k-th chunk edge in 1-frame steps
    edge = chunks * CHUNK_SAMPLES - tiny_model.stft_pad
    lengths = [edge + d for d in range(-960, 961, 160)]
    waves = [torch.randn(n) * 0.1 for n in lengths]
    batch, lens = collate_waveforms(waves)
    result = tiny_model.encode(batch, lens)
    assert result.frames.tolist() == [(n // 160 + 1) // 4 for n in lengths]
    assert torch.isfinite(result.z).all() and torch.isfinite(result.semantic_high).all()

    enc = tiny_model.semantic_encoder.encoder
    prepared = pad_batch_for_stft(batch, lens, tiny_model.stft_pad)
    mel_frames = prepared.shape[1] // 160 + 1
    with torch.no_grad():
        ours = enc(prepared, lens)
        if mel_frames % 1008 == 0 or mel_frames % 1008 >= 4:  # the old path worked on this batch
            assert torch.equal(ours, _per_mel_chunk_reference(enc, prepared, lens))

    crashed_before = [i for i, n in enumerate(lengths) if (n + 512) // 160 + 1 - 1008 * chunks in (1, 2, 3)]
    assert crashed_before, "the sweep must cover the lengths that used to crash"
    for index in crashed_before:
        alone = tiny_model.encode(waves[index])  # alone, its last mel chunk holds 1-3 frames
        for name, value in alone.item(0).items():
            torch.testing.assert_close(result.item(index)[name], value, atol=1e-4, rtol=1e-4, msg=name)


def test_earlier_outputs_are_bit_identical_for_a_batch_of_ordinary_lengths(tiny_model):
    torch.manual_seed(5)
    waves = [torch.randn(n) * 0.1 for n in (16_000, CHUNK_SAMPLES + 3000, 40_000)]
    batch, lens = collate_waveforms(waves)
    prepared = pad_batch_for_stft(batch, lens, tiny_model.stft_pad)
    enc = tiny_model.semantic_encoder.encoder
    with torch.no_grad():
        assert torch.equal(enc(prepared, lens), _per_mel_chunk_reference(enc, prepared, lens))
