"""The network: token embedding -> stacked LSTM -> logits over the vocabulary."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter out of the terminal
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402

from musicgen.validation import check_ranges  # noqa: E402


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of the LSTM; saved in every bundle as config.json."""

    vocabulary_size: int = 200  # number of token ids, 4..4096
    embedding_size: int = 64  # width of the token embedding, 4..1024
    layers: int = 2  # stacked LSTM layers, 1..4
    units: int = 256  # LSTM units per layer, 8..1024
    dropout: float = 0.2  # dropout between layers while training, 0..0.8

    def __post_init__(self) -> None:
        check_ranges(
            self,
            vocabulary_size=(4, 4096),
            embedding_size=(4, 1024),
            layers=(1, 4),
            units=(8, 1024),
            dropout=(0.0, 0.8),
        )

    def to_dict(self) -> dict:
        """Plain data for JSON."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        """Rebuild from JSON data, refusing unknown or missing fields."""
        names = {field.name for field in fields(cls)}
        if not isinstance(data, dict) or set(data) != names:
            raise ValueError(f"the model settings must have exactly the fields {sorted(names)}")
        return cls(**data)


def build_model(config: ModelConfig) -> keras.Model:
    """A functional Keras model mapping ids (batch, time) to logits (batch, time, vocabulary)."""
    ids = keras.Input(shape=(None,), dtype="int32", name="ids")
    x = keras.layers.Embedding(config.vocabulary_size, config.embedding_size, name="embedding")(ids)
    for layer in range(config.layers):
        x = keras.layers.LSTM(config.units, return_sequences=True, name=f"lstm_{layer}")(x)
        x = keras.layers.Dropout(config.dropout, name=f"dropout_{layer}")(x)
    logits = keras.layers.Dense(config.vocabulary_size, name="logits")(x)
    return keras.Model(ids, logits, name="musicgen_lstm")
