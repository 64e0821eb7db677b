"""Fast autoregressive sampling in NumPy: no TensorFlow, nothing to compile, the first piece comes at once.

The LSTM state is carried from step to step, so each new token costs one step of the
network, not a pass over the whole window as with `model.predict` per note. Rows of several
requests (several visitors' pieces) step together in one batch (`Batch`): a request may join
while others are under way, and leaves as soon as its own rows end. Every row has its own
settings and its own random stream, and its products are computed row by row (one matrix-vector
product each, which is what BLAS does fastest at these sizes anyway), so a piece does not
depend on what else shares its batch: the same seed gives the same piece.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import threadpoolctl

from musicgen.metrics import PITCH_CLASS_NAMES as KEY_NAMES
from musicgen.metrics import SCALE_STEPS
from musicgen.score import Score
from musicgen.settings import TEMPERATURE_RANGE
from musicgen.tokens import END, PAD, START, Vocabulary, decode, encode
from musicgen.validation import check_ranges

MAX_TOKENS = 20_000  # hard cap on one generation
# The opening a piece continues is read through the network token by token while the model is busy for everyone:
# 64 notes take about 150 tokens; silences and held notes beyond these bounds are cut.
MAX_PRIMER_TOKENS = 512
MAX_PRIMER_BEATS = 16.0
# A model trained on someone's music keeps the openings of up to MAX_OPENINGS of its files, OPENING_NOTES notes each
# (musicgen.bundle): its pieces start from one of them unless asked otherwise. On airs the base learned in a few
# steps, even the first note (which carries the instrument) made pieces keep the airs' style; four give a motif.
OPENING_NOTES = 4
MAX_OPENINGS = 16


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
    """(previous id, next id) -> may follow: a note (pitch or drum) takes a duration next, a duration only follows
    a note."""
    is_duration = np.array([name.startswith("duration_") for name in vocabulary.names])
    may_follow = np.tile(~is_duration, (len(vocabulary), 1))
    may_follow[vocabulary.is_note_id] = is_duration
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


MAX_ROWS = 64  # rows a batch steps at once; a request that does not fit waits for rows to end


def lstm_cell(z: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """New (h, c) of an LSTM cell from its summed gate inputs z, in Keras's gate order (input, forget, cell, output)."""
    i, f, g, o = np.split(z, 4, axis=-1)
    c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
    return _sigmoid(o) * np.tanh(c), c


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * np.tanh(0.5 * x) + 0.5  # the logistic function, without overflow


@functools.cache
def use_one_blas_thread() -> None:
    """Limit NumPy's BLAS to one thread in this process: a product of one row is too small to share, and on two busy
    cores BLAS threads only wait for each other (a piece took 25 times as long)."""
    threadpoolctl.threadpool_limits(limits=1, user_api="blas")


def _rows_times(x: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """x (rows, n) @ matrix (n, m), one matrix-vector product per row: a row's result never depends on the others
    (BLAS picks its kernel, and so its rounding, by the number of rows of a matrix product)."""
    return (x[:, None, :] @ matrix)[:, 0, :]


class Network:
    """The weights of a model built by musicgen.model (in the order of its `get_weights`), laid out for stepping."""

    def __init__(self, arrays: Sequence[np.ndarray]):
        embedding, *cells, output_kernel, output_bias = [np.asarray(array, np.float32) for array in arrays]
        kernel, self.first_recurrent, bias = cells[:3]
        self.first_inputs = embedding @ kernel + bias  # (vocabulary, 4 units): the first layer's input of every id
        # Later layers: input and recurrent kernels stacked, so that [x, h] takes one product.
        self.upper = [(np.concatenate(cells[at : at + 2]), cells[at + 2]) for at in range(3, len(cells), 3)]
        self.output_kernel, self.output_bias = output_kernel, output_bias
        self.units = self.first_recurrent.shape[0]

    def step(self, tokens: np.ndarray, states: list[tuple[np.ndarray, np.ndarray]]):
        """Logits (rows, vocabulary) after one id per row, and the new (h, c) of each layer."""
        (h, c), *upper_states = states
        x, c = lstm_cell(self.first_inputs[tokens] + _rows_times(h, self.first_recurrent), c)
        new_states = [(x, c)]
        for (kernel, bias), (h, c) in zip(self.upper, upper_states, strict=True):
            x, c = lstm_cell(_rows_times(np.concatenate([x, h], axis=1), kernel) + bias, c)
            new_states.append((x, c))
        return _rows_times(x, self.output_kernel) + self.output_bias, new_states


@dataclass(eq=False)
class Request:
    """One call for pieces: its settings, its primer, and the pieces as they grow."""

    config: SampleConfig
    primers: list[list[int]]  # of each variation
    max_new: int  # tokens each row may generate
    max_steps: int  # time steps each piece may last
    allowed: np.ndarray  # (vocabulary,) ids these settings may choose
    pieces: list[list[int]]  # generated ids of each variation, the primer not included
    rows_left: int

    @property
    def done(self) -> bool:
        return self.rows_left == 0

    def results(self) -> list[list[int]]:
        """Token ids of each piece, its primer first."""
        return [primer + piece for primer, piece in zip(self.primers, self.pieces, strict=True)]


class Sampler:
    """Generates from the weights of a model built by musicgen.model (a Keras model, or its weight arrays)."""

    def __init__(self, network, vocabulary: Vocabulary, openings: Sequence[Sequence[int]] = ()):
        """openings: token ids of openings of the music the model learned (musicgen.bundle.BundleInfo.openings)."""
        use_one_blas_thread()
        self.vocabulary = vocabulary
        self.openings = [_clean_primer(opening, len(vocabulary)) for opening in openings]
        self.network = Network(network.get_weights() if hasattr(network, "get_weights") else network)
        self.is_note = vocabulary.is_note_id
        self.shift_steps_of_id = vocabulary.shift_steps_of_id.astype(np.int64)
        self.follow_mask = follow_mask(vocabulary)
        self.opening_mask = opening_mask(vocabulary)

    def primers(self, config: SampleConfig, primer: list[int] | None = None) -> list[list[int]]:
        """The ids each variation starts from: the primer; without one, one of the model's openings (variation v
        of seed s the opening s + v, counted round), or `start` for a model without openings."""
        if primer is None and self.openings:
            count = len(self.openings)
            return [self.openings[(config.seed + variation) % count] for variation in range(config.variations)]
        return [_clean_primer(primer, len(self.vocabulary))] * config.variations

    def request(self, config: SampleConfig, primer: list[int] | None = None) -> Request:
        """A request for `config.variations` pieces continuing their primers (see `primers`)."""
        steps_per_beat = self.vocabulary.config.steps_per_beat
        max_steps = int(np.ceil(config.max_seconds * config.bpm / 60 * steps_per_beat))
        max_new = min(MAX_TOKENS, 8 * config.max_notes + max_steps + 16)
        allowed = allowed_token_mask(self.vocabulary, config.key)
        pieces = [[] for _ in range(config.variations)]
        return Request(config, self.primers(config, primer), max_new, max_steps, allowed, pieces, config.variations)

    def generate(self, config: SampleConfig, primer: list[int] | None = None) -> list[list[int]]:
        """Token ids of `config.variations` pieces, each starting with its primer (see `primers`)."""
        batch = Batch(self)
        request = batch.add(self.request(config, primer))
        while not request.done:
            batch.step()
        return request.results()

    def scores(self, config: SampleConfig, primer: list[int] | None = None, program: int | None = None) -> list[Score]:
        """The generated pieces as Scores, at the config's tempo and cut to its length in seconds; `program` plays
        every part but the drums on one instrument (None: each on its own, as the tokens say)."""
        return self.pieces_to_scores(config, self.generate(config, primer), program)

    def pieces_to_scores(
        self, config: SampleConfig, pieces: list[list[int]], program: int | None = None
    ) -> list[Score]:
        """Generated ids as Scores, at the config's tempo and cut to its length in seconds."""
        microseconds_per_beat = round(60_000_000 / config.bpm)
        scores = [decode(ids, self.vocabulary, program, microseconds_per_beat) for ids in pieces]
        return [trim_to_seconds(score, config.max_seconds) for score in scores]


@dataclass(eq=False)
class _Row:
    """One piece being generated."""

    request: Request
    variation: int  # 0-based
    rng: np.random.Generator  # seeded by (seed, variation): the piece does not depend on its neighbours

    def next_primer_id(self, primer_left: int) -> int:
        primer = self.request.primers[self.variation]
        return primer[len(primer) - primer_left]


class Batch:
    """Rows of one or more requests stepped together, one token per row and step. Not thread-safe: one thread steps
    it, and adds requests between steps."""

    def __init__(self, sampler: Sampler, max_rows: int = MAX_ROWS):
        self.sampler, self.max_rows = sampler, max_rows
        self._rows: list[_Row] = []
        self._columns: dict[str, np.ndarray] = {}  # one entry per row in each

    def __len__(self) -> int:
        return len(self._rows)

    def room(self) -> int:
        """Rows that may still join."""
        return self.max_rows - len(self._rows)

    def add(self, request: Request) -> Request:
        """Start the request's rows at the next step (ValueError when they do not fit)."""
        rows = request.config.variations
        if rows > self.room():
            raise ValueError(f"a batch holds at most {self.max_rows} pieces")
        self._rows += [
            _Row(request, number, np.random.default_rng([request.config.seed, number])) for number in range(rows)
        ]
        self._append(self._new_columns(request, rows))
        return request

    def step(self) -> list[Request]:
        """Advance every row by one token; the requests whose last row ended in this step."""
        columns = self._columns
        logits, states = self.sampler.network.step(columns["token"], self._states())
        feeding = columns["primer_left"] > 0  # rows still reading their primer take its next id
        token = self._choose(logits, feeding)
        for index in np.flatnonzero(feeding):
            token[index] = self._rows[index].next_primer_id(columns["primer_left"][index])
        self._set_states(states)
        ended = self._record(token, ~feeding)
        columns["primer_left"] -= feeding
        columns["token"] = token
        return self._remove(ended)

    def _new_columns(self, request: Request, rows: int) -> dict[str, np.ndarray]:
        """The per-row arrays of a request's rows."""
        config = request.config
        columns = {
            "token": np.full(rows, START),  # every primer starts with it
            "primer_left": np.array([len(primer) - 1 for primer in request.primers]),
            "notes": np.zeros(rows, int),
            "steps": np.zeros(rows, int),
            "made": np.zeros(rows, int),
            "max_new": np.full(rows, request.max_new),
            "max_notes": np.full(rows, config.max_notes),
            "max_steps": np.full(rows, request.max_steps),
            "temperature": np.full(rows, max(config.temperature, 1e-6), np.float32),
            "top_k": np.full(rows, config.top_k),
            "top_p": np.full(rows, config.top_p, np.float32),
            "greedy": np.full(rows, config.temperature < 1e-3),
            "allowed": np.tile(request.allowed, (rows, 1)),
        }
        for layer in range(len(self.sampler.network.upper) + 1):
            columns[f"h{layer}"] = columns[f"c{layer}"] = np.zeros((rows, self.sampler.network.units), np.float32)
        return columns

    def _append(self, columns: dict[str, np.ndarray]) -> None:
        old = self._columns
        self._columns = {name: np.concatenate([old[name], new]) if old else new for name, new in columns.items()}

    def _states(self) -> list[tuple[np.ndarray, np.ndarray]]:
        layers = len(self.sampler.network.upper) + 1
        return [(self._columns[f"h{layer}"], self._columns[f"c{layer}"]) for layer in range(layers)]

    def _set_states(self, states: list[tuple[np.ndarray, np.ndarray]]) -> None:
        for layer, (h, c) in enumerate(states):
            self._columns[f"h{layer}"], self._columns[f"c{layer}"] = h, c

    def _choose(self, logits: np.ndarray, feeding: np.ndarray) -> np.ndarray:
        """The next id of every row under its settings and the token grammar (rows reading a primer draw nothing)."""
        columns, sampler = self._columns, self.sampler
        opening = (columns["notes"] == 0)[:, None]  # no rest before a piece's first note
        allowed = columns["allowed"] & sampler.follow_mask[columns["token"]] & (~opening | sampler.opening_mask)
        draws = zip(self._rows, feeding, strict=True)
        uniforms = np.array([1.0 if feed else 1.0 - row.rng.random() for row, feed in draws])
        settings = (columns[name] for name in ("temperature", "top_k", "top_p", "greedy"))
        return choose(logits, allowed, *settings, uniforms)

    def _record(self, token: np.ndarray, generating: np.ndarray) -> np.ndarray:
        """Add the generated ids to their pieces and count them; True for rows that ended."""
        columns, sampler = self._columns, self.sampler
        for index in np.flatnonzero(generating):
            row = self._rows[index]
            row.request.pieces[row.variation].append(int(token[index]))
        columns["notes"] += generating & sampler.is_note[token]
        columns["steps"] += np.where(generating, sampler.shift_steps_of_id[token], 0)
        columns["made"] += generating
        limits_reached = (
            (columns["notes"] > columns["max_notes"])
            | (columns["steps"] >= columns["max_steps"])
            | (columns["made"] >= columns["max_new"])
        )
        return generating & ((token == END) | limits_reached)

    def _remove(self, ended: np.ndarray) -> list[Request]:
        """Drop the rows that ended; the requests that are now complete."""
        finished = []
        for index in np.flatnonzero(ended):
            request = self._rows[index].request
            request.rows_left -= 1
            if request.done:
                finished.append(request)
        if ended.any():
            self._rows = [row for row, end in zip(self._rows, ended, strict=True) if not end]
            self._columns = {name: column[~ended] for name, column in self._columns.items()}
        return finished


def choose(logits, allowed, temperature, top_k, top_p, greedy, uniforms) -> np.ndarray:
    """One id per row: masked, temperature-scaled, top-k and top-p filtered, then drawn with the row's uniform number
    in (0, 1] from the cumulative probabilities (all arguments hold one entry per row)."""
    logits = np.where(allowed, logits, np.float32(-1e9))
    best = logits.argmax(axis=1)
    scaled = logits / temperature[:, None]
    ranked = -np.sort(-scaled, axis=1)
    vocabulary_size = scaled.shape[1]
    k = np.where(top_k > 0, np.minimum(top_k, vocabulary_size), vocabulary_size)
    kth_largest = ranked[np.arange(len(ranked)), k - 1][:, None]
    ranked_probabilities = _softmax(ranked)
    before = np.cumsum(ranked_probabilities, axis=1) - ranked_probabilities
    nucleus_floor = np.where(before < top_p[:, None], ranked, np.inf).min(axis=1, keepdims=True)
    kept = allowed & (scaled >= kth_largest) & (scaled >= nucleus_floor)
    weights = np.where(kept, np.exp(scaled - scaled.max(axis=1, keepdims=True)), 0)
    cumulative = np.cumsum(weights, axis=1)
    drawn = (cumulative < uniforms[:, None] * cumulative[:, -1:]).sum(axis=1)
    return np.where(greedy, best, np.minimum(drawn, vocabulary_size - 1))


def _softmax(x: np.ndarray) -> np.ndarray:
    exponentials = np.exp(x - x.max(axis=1, keepdims=True))
    return exponentials / exponentials.sum(axis=1, keepdims=True)


def _clean_primer(primer: list[int] | None, vocabulary_size: int) -> list[int]:
    """The primer with unknown ids and any `end` removed, always starting with `start`."""
    kept = [int(i) for i in primer or [] if 0 <= int(i) < vocabulary_size and int(i) not in (PAD, END)]
    return kept if kept[:1] == [START] else [START, *kept]


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
    is_note = vocabulary.is_note_id
    seen = 0
    for position, token in enumerate(ids[: MAX_PRIMER_TOKENS + 1]):
        if vocabulary.shift_steps_of_id[token] > 0 and (seen >= notes or position >= MAX_PRIMER_TOKENS):
            return ids[:position]
        seen += int(is_note[token])
    return ids[:MAX_PRIMER_TOKENS]


def openings_of(scores: Sequence[Score], vocabulary: Vocabulary) -> list[list[int]]:
    """The openings a model keeps of the music it learns: OPENING_NOTES notes of each of its first MAX_OPENINGS
    pieces that have notes the vocabulary keeps."""
    openings = (primer_from_score(score, vocabulary, OPENING_NOTES) for score in scores)
    return [opening for opening in openings if len(opening) > 1][:MAX_OPENINGS]


def _opening_notes(score: Score, vocabulary: Vocabulary, notes: int) -> tuple:
    """The notes the tokens keep, up to the chord that holds the `notes`-th, each held at most MAX_PRIMER_BEATS."""
    kept = score.notes if vocabulary.keeps_drums else score.melodic_notes
    if len(kept) > notes:
        kept = tuple(note for note in kept if note.start <= kept[notes - 1].start)
    return tuple(replace(note, end=min(note.end, note.start + MAX_PRIMER_BEATS)) for note in kept)
