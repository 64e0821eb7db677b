"""musicgen: compose original music with an LSTM trained on MIDI files."""

__version__ = "0.1.0"
