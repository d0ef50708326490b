"""The input side: the one place every reader of input audio goes through (the tokenization
pipeline, tokenizer training, evaluation).

- `config.SourceConfig`: where a corpus is and how to read it.
- `sources`: listing a corpus into `InputItem`s with stable keys (`items`): a folder (`listing`),
  manifests (ours, NeMo's, lhotse's), Hugging Face parquet, WebDataset audio shards.
- `rule`: what counts as audio, and the members of a WebDataset audio shard.
- `opening`: local files as they are, remote ones as range-reading file objects.
- `decoder`: any format FFmpeg reads to mono float32 at the model rate, spans by seeking
  (`wav` for PCM wavs, `ffmpeg_cli` as the last resort), every failure an `AudioError`.
- `testing`: real test audio made on the spot (espeak-ng, sox, ffmpeg); `python -m
  losatok_input.testing DIR` writes the demo corpus.

Below `pipelines` and `jobs`; depends on `losatok_storage`, `losatok_data` (the manifest
contract, failure records) and `losatok.audio`'s waveform helpers.
"""
