"""Fast autoregressive sampling: the whole generation loop runs in one compiled TensorFlow function.

The LSTM state is carried from step to step, so each new token costs one step of the
network, not a pass over the whole window as with `model.predict` per note.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import tensorflow as tf

from musicgen.metrics import PITCH_CLASS_NAMES as KEY_NAMES
from musicgen.metrics import SCALE_STEPS
from musicgen.model import lstm_cell
from musicgen.score import Score
from musicgen.settings import TEMPERATURE_RANGE
from musicgen.tokens import END, PAD, START, Vocabulary, decode, encode
from musicgen.validation import check_ranges

MAX_TOKENS = 20_000  # hard cap on one generation
# The opening a piece continues is read through the network token by token while the model is busy for everyone:
# 64 notes take about 150 tokens; silences and held notes beyond these bounds are cut.
MAX_PRIMER_TOKENS = 512
MAX_PRIMER_BEATS = 16.0


@dataclass(frozen=True)
class SampleConfig:
    """Controls of one generation."""

    temperature: float = 1.0  # 0..3; near 0 always takes the likeliest token, higher is wilder
    top_k: int = 0  # keep only the k likeliest tokens, 0 = all
    top_p: float = 1.0  # keep the smallest set of tokens whose probability adds up to p, 0 < p <= 1
    max_notes: int = 400  # stop after this many notes, 1..5000
    max_seconds: float = 30.0  # stop after this much music, 1..600
    seed: int = 0  # the same seed (with the same model and settings) gives the same piece
    variations: int = 1  # pieces generated at once, 1..8
    key: str | None = None  # key lock such as "C major" or "F# minor": other pitches are never sampled
    bpm: float = 100.0  # playback tempo, 20..300; turns max_seconds into beats

    def __post_init__(self) -> None:
        check_ranges(
            self,
            temperature=TEMPERATURE_RANGE,
            top_k=(0, 4096),
            top_p=(0.01, 1.0),
            max_notes=(1, 5000),
            max_seconds=(1.0, 600.0),
            seed=(0, 2**31 - 1),
            variations=(1, 8),
            bpm=(20.0, 300.0),
        )
        if self.key is not None:
            scale_pitch_classes(self.key)


def key_names() -> list[str]:
    """Every key the key lock knows, 'C major' to 'B minor'."""
    return [f"{tonic} {mode}" for mode in ("major", "minor") for tonic in KEY_NAMES]


def scale_pitch_classes(key: str) -> set[int]:
    """Pitch classes 0..11 of a key such as 'D minor'."""
    tonic, _, mode = key.partition(" ")
    if tonic not in KEY_NAMES or mode not in ("major", "minor"):
        raise ValueError(f"key must be a tonic {'/'.join(KEY_NAMES)} and 'major' or 'minor', got {key!r}")
    return {(KEY_NAMES.index(tonic) + step) % 12 for step in SCALE_STEPS[mode]}


def follow_mask(vocabulary: Vocabulary) -> np.ndarray:
    """(previous id, next id) -> may follow: a pitch takes a duration next, a duration only follows a note."""
    is_duration = np.array([name.startswith("duration_") for name in vocabulary.names])
    is_pitch = vocabulary.pitch_of_id >= 0
    may_follow = np.tile(~is_duration, (len(vocabulary), 1))
    may_follow[is_pitch] = is_duration
    may_follow[is_duration] = True
    return may_follow


def opening_mask(vocabulary: Vocabulary) -> np.ndarray:
    """Ids allowed before the first generated note: no rest, so every piece opens with a note."""
    return vocabulary.shift_steps_of_id == 0


def allowed_token_mask(vocabulary: Vocabulary, key: str | None) -> np.ndarray:
    """True for ids the sampler may choose: never pad, start or end, and only in-scale pitches under a key lock.

    `end` is left out so that a piece lasts the length asked for instead of stopping where a training piece did.
    """
    allowed = np.ones(len(vocabulary), bool)
    allowed[[PAD, START, END]] = False
    if key is not None:
        pitches = vocabulary.pitch_of_id
        in_scale = np.isin(pitches % 12, sorted(scale_pitch_classes(key)))
        allowed &= (pitches < 0) | in_scale
    return allowed


class Sampler:
    """Generates from a Keras LSTM built by musicgen.model, with its weights read once."""

    def __init__(self, model, vocabulary: Vocabulary):
        self.vocabulary = vocabulary
        self.embedding = tf.constant(model.get_layer("embedding").get_weights()[0])
        self.lstm_weights = [
            tuple(tf.constant(w) for w in layer.get_weights())
            for layer in model.layers
            if layer.name.startswith("lstm_")
        ]
        self.output_weights = tuple(tf.constant(w) for w in model.get_layer("logits").get_weights())
        self.units = int(self.lstm_weights[0][1].shape[0])
        self.pitch_of_id = tf.constant(vocabulary.pitch_of_id >= 0)
        self.shift_steps_of_id = tf.constant(vocabulary.shift_steps_of_id.astype(np.int32))
        self.follow_mask = tf.constant(follow_mask(vocabulary))
        self.opening_mask = tf.constant(opening_mask(vocabulary))
        self._primer = tf.function(self._read_primer, reduce_retracing=True)
        self._loop = tf.function(self._generate_loop, jit_compile=True, reduce_retracing=True)

    def generate(self, config: SampleConfig, primer: list[int] | None = None) -> list[list[int]]:
        """Token ids of `config.variations` pieces, each starting with the primer (default: `start`)."""
        primer = _clean_primer(primer, len(self.vocabulary))
        steps_per_beat = self.vocabulary.config.steps_per_beat
        max_steps = int(np.ceil(config.max_seconds * config.bpm / 60 * steps_per_beat))
        max_new = min(MAX_TOKENS, 8 * config.max_notes + max_steps + 16)
        primer_ids = tf.constant(np.tile(primer, (config.variations, 1)), tf.int32)
        ids = self._loop(
            primer_ids[:, -1],
            self._primer(primer_ids),
            tf.constant(max_new, tf.int32),
            tf.constant(max(config.temperature, 1e-6), tf.float32),
            tf.constant(config.top_k, tf.int32),
            tf.constant(config.top_p, tf.float32),
            tf.constant(allowed_token_mask(self.vocabulary, config.key)),
            tf.constant([config.seed, 0], tf.int32),
            tf.constant(config.max_notes, tf.int32),
            tf.constant(max_steps, tf.int32),
            tf.constant(config.temperature < 1e-3),
        )
        return [primer + _cut_at_end(row) for row in ids.numpy().tolist()]

    def scores(self, config: SampleConfig, primer: list[int] | None = None, program: int = 0) -> list[Score]:
        """The generated pieces as Scores, at the config's tempo and cut to its length in seconds."""
        microseconds_per_beat = round(60_000_000 / config.bpm)
        pieces = [decode(ids, self.vocabulary, program, microseconds_per_beat) for ids in self.generate(config, primer)]
        return [trim_to_seconds(piece, config.max_seconds) for piece in pieces]

    def _step(self, token_ids, states):
        """One network step for a batch of ids; returns logits and the new (h, c) per layer."""
        x = tf.gather(self.embedding, token_ids)
        new_states = []
        for (kernel, recurrent_kernel, bias), (h, c) in zip(self.lstm_weights, states, strict=True):
            h, c = lstm_cell(tf.matmul(x, kernel) + tf.matmul(h, recurrent_kernel) + bias, c)
            new_states.append((h, c))
            x = h
        kernel, bias = self.output_weights
        return tf.matmul(x, kernel) + bias, new_states

    def _read_primer(self, primer):
        """LSTM states after every primer id but the last, which the loop feeds first."""
        zeros = tf.zeros([tf.shape(primer)[0], self.units])
        states = [(zeros, zeros) for _ in self.lstm_weights]
        for position in tf.range(tf.shape(primer)[1] - 1):
            _, states = self._step(primer[:, position], states)
        return states

    def _generate_loop(
        self, token, states, max_new, temperature, top_k, top_p, allowed, seed, max_notes, max_steps, greedy
    ):
        """Sample until every row has ended or a limit is reached; (batch, MAX_TOKENS) ids, padded."""
        batch = tf.shape(token)[0]

        def keep_going(index, token, states, done, notes, steps, outputs):
            return (index < max_new) & ~tf.reduce_all(done)

        def next_token(index, token, states, done, notes, steps, outputs):
            logits, states = self._step(token, states)
            allowed_now = allowed & tf.gather(self.follow_mask, token) & ((notes > 0)[:, None] | self.opening_mask)
            token = _choose(logits, temperature, top_k, top_p, allowed_now, seed + [0, index], greedy)
            token = tf.where(done, PAD, token)
            notes += tf.cast(tf.gather(self.pitch_of_id, token), tf.int32)
            steps += tf.gather(self.shift_steps_of_id, token)
            done |= (token == END) | (notes > max_notes) | (steps >= max_steps)
            return index + 1, token, states, done, notes, steps, outputs.write(index, token)

        no = tf.zeros([batch], tf.int32)
        outputs = tf.TensorArray(tf.int32, size=MAX_TOKENS, element_shape=[None])
        start = (0, token, states, tf.zeros([batch], tf.bool), no, no, outputs)
        *_, outputs = tf.while_loop(keep_going, next_token, start)
        return tf.transpose(outputs.stack())


def _choose(logits, temperature, top_k, top_p, allowed, seed, greedy):
    """One id per row: masked, temperature-scaled, top-k and top-p filtered, then sampled."""
    logits = tf.where(allowed, logits, -1e9)
    best = tf.argmax(logits, axis=-1, output_type=tf.int32)
    logits = logits / temperature
    sorted_logits = tf.sort(logits, direction="DESCENDING", axis=-1)
    vocabulary_size = tf.shape(logits)[-1]
    k = tf.where(top_k > 0, tf.minimum(top_k, vocabulary_size), vocabulary_size)
    kth_largest = sorted_logits[:, k - 1 : k]
    cumulative = tf.cumsum(tf.nn.softmax(sorted_logits), axis=-1, exclusive=True)
    nucleus_floor = tf.reduce_min(tf.where(cumulative < top_p, sorted_logits, 1e9), axis=-1, keepdims=True)
    logits = tf.where((logits >= kth_largest) & (logits >= nucleus_floor), logits, -1e9)
    sampled = tf.random.stateless_categorical(logits, 1, seed, dtype=tf.int32)[:, 0]
    return tf.where(greedy, best, sampled)


def _clean_primer(primer: list[int] | None, vocabulary_size: int) -> list[int]:
    """The primer with unknown ids and any `end` removed, always starting with `start`."""
    kept = [int(i) for i in primer or [] if 0 <= int(i) < vocabulary_size and int(i) not in (PAD, END)]
    return kept if kept[:1] == [START] else [START, *kept]


def _cut_at_end(row: list[int]) -> list[int]:
    """Generated ids up to and including `end`, padding dropped."""
    ids = []
    for token in row:
        if token == PAD:
            break
        ids.append(token)
        if token == END:
            break
    return ids


def trim_to_seconds(score: Score, seconds: float) -> Score:
    """Drop notes that start after `seconds` and end the rest there (for a score with one tempo)."""
    limit = seconds * 1e6 / score.tempos[0].microseconds_per_beat  # in beats
    notes = tuple(replace(note, end=min(note.end, limit)) for note in score.notes if note.start < limit)
    return replace(score, notes=notes)


def primer_from_score(score: Score, vocabulary: Vocabulary, notes: int = 16) -> list[int]:
    """The opening ids of a score: `start` and its first chords, up to about `notes` notes and at most
    MAX_PRIMER_TOKENS (a long silence or a long-held note in the opening is cut there).

    Only the opening notes are encoded, so a long piece costs no more than a short one."""
    opening = _opening_notes(score, vocabulary, notes)
    ids = encode(replace(score, notes=opening), vocabulary)[:-1]  # without `end`
    is_pitch = vocabulary.pitch_of_id >= 0
    seen = 0
    for position, token in enumerate(ids[: MAX_PRIMER_TOKENS + 1]):
        if vocabulary.shift_steps_of_id[token] > 0 and (seen >= notes or position >= MAX_PRIMER_TOKENS):
            return ids[:position]
        seen += int(is_pitch[token])
    return ids[:MAX_PRIMER_TOKENS]


def _opening_notes(score: Score, vocabulary: Vocabulary, notes: int) -> tuple:
    """The notes the tokens keep, up to the chord that holds the `notes`-th, each held at most MAX_PRIMER_BEATS."""
    kept = score.notes if vocabulary.config.include_drums else score.melodic_notes
    if len(kept) > notes:
        kept = tuple(note for note in kept if note.start <= kept[notes - 1].start)
    return tuple(replace(note, end=min(note.end, note.start + MAX_PRIMER_BEATS)) for note in kept)
