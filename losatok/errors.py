"""The tokenizer package's errors, importable without torch (the pipeline's driver never loads a model)."""


class CheckpointError(RuntimeError):
    """A checkpoint does not fit the model; the message names the offending keys."""
