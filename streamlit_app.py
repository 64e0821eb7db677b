"""musicgen in the browser: compose with a neural network, teach it your own MIDI files, keep it.

    streamlit run streamlit_app.py

Page config, cached loaders, then the page from top to bottom. The musicgen package makes
every decision (musicgen.sessions and musicgen.workspace hold what is done per visitor);
this file lays it out.
Environment: MUSICGEN_MODEL (the model to open with, default checkpoints/bach),
MUSICGEN_MODEL_MUSIC (the music it learned from, default samples/bach), MUSICGEN_RUNS and
the limits that musicgen.workspace.Limits reads.
"""

from __future__ import annotations

import logging
import os
import re
import time
from contextlib import contextmanager
from pathlib import Path

import streamlit as st

from musicgen import audio, jobs, memory, plots, sessions
from musicgen.bundle import MAX_BUNDLE_BYTES
from musicgen.corpus import MAX_CORPUS_TOKENS, Corpus, UploadLimits, load_corpus
from musicgen.midi import MAX_FILE_BYTES
from musicgen.styles import Style, built_in_styles
from musicgen.workspace import (
    WEIGHTS_FILE,
    Limits,
    Workspace,
    model_name,
    model_summary,
    remove_old_workspaces_now_and_then,
    runs_root,
)

st.set_page_config(
    page_title="musicgen: compose with a neural network", page_icon=":material/music_note:", layout="wide"
)

APP_FOLDER = Path(__file__).resolve().parent
SHIPPED_MODEL = Path(os.environ.get("MUSICGEN_MODEL") or APP_FOLDER / "checkpoints" / "bach")  # the style offered first
SHIPPED_MUSIC = Path(os.environ.get("MUSICGEN_MODEL_MUSIC") or APP_FOLDER / "samples" / "bach")
EXAMPLES = APP_FOLDER / "samples" / "demo"  # short pieces a piece can start from
PROGRESS_SECONDS = 1.0  # how often the progress of a queued or running training is redrawn
CURVE_SECONDS = 5.0  # how often its loss curve is redrawn: redrawing a chart costs the browser most
PANEL_AFTER_END_SECONDS = 30  # the progress keeps redrawing itself this long after the end, to show it surely
MIDI_UPLOAD_MEGABYTES = MAX_FILE_BYTES // 1_000_000  # the browser refuses bigger files; midi.read checks exactly
MODEL_UPLOAD_MEGABYTES = MAX_BUNDLE_BYTES // 1_000_000  # .streamlit/config.toml's maxUploadSize matches it
INSTRUMENTS = {  # General MIDI program of each instrument offered for playback, counted from 0
    "Piano": 0,
    "Harpsichord": 6,
    "Music box": 10,
    "Vibraphone": 11,
    "Church organ": 19,
    "Nylon guitar": 24,
    "Cello": 42,
    "Strings": 48,
    "Choir": 52,
    "Trumpet": 56,
    "Clarinet": 71,
    "Flute": 73,
}
AS_WRITTEN = "As written: each part its own"  # for models whose tokens name the instruments
NO_PRIMER = "nothing: a fresh start"
OPENINGS = "a few notes of the music it learned"  # the first choice for a model that keeps openings (musicgen.sample)
KEY_OFF, KEY_AUTO = "off", "the key of the music I gave"
LOSS_EXPLANATION = (
    "**Loss** is how surprised the model is by the next note of the music: lower is better. "
    "*Validation* loss is measured on a file held back from training, so it shows how well the "
    "model knows music it has not memorised."
)

log = logging.getLogger("musicgen.app")


# Cached loaders: shared by every visitor of this process.


@st.cache_resource(show_spinner=False)
def server_log() -> None:
    """musicgen's log, INFO and up, on the server's standard error beside Streamlit's own."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger("musicgen").addHandler(handler)
    logging.getLogger("musicgen").setLevel(logging.INFO)


@st.cache_resource(show_spinner=False)
def keep_keras_between_runs() -> None:
    """Switch off Streamlit's Keras clean-up for this process.

    Once Keras is imported (someone trained), Streamlit calls keras.backend.clear_session() after every
    script run of every visitor: a garbage collection holding Python's lock for much of a second, and a
    reset of Keras's and TensorFlow's state under the trainings running in their own threads. With a
    training running, a 30 s piece took 2-6 s to play instead of 0.6 s. Trainings need no clean-up from
    it: each builds its own model and leaves no global state behind.
    """
    from streamlit.runtime.scriptrunner import script_runner

    script_runner._clean_problem_modules = lambda: None


def styles() -> dict[Path, Style]:
    """The built-in styles by model folder, the shipped model first: MUSICGEN_MODEL alone when it is set (read at
    each run: a small file)."""
    if os.environ.get("MUSICGEN_MODEL"):
        return {SHIPPED_MODEL: Style(SHIPPED_MODEL.name, SHIPPED_MODEL.name, SHIPPED_MODEL, SHIPPED_MUSIC)}
    found = {style.model: style for style in built_in_styles()}
    return {SHIPPED_MODEL: Style("bach", "Bach chorales", SHIPPED_MODEL, SHIPPED_MUSIC)} | found


@st.cache_resource(show_spinner=False)
def limits() -> Limits:
    """Resource limits from the environment."""
    return Limits.from_environment()


@st.cache_resource(show_spinner=False)
def memory_budget() -> memory.MemoryBudget:
    """The memory this process lives within (MUSICGEN_MEMORY_MB), split into shares."""
    return memory.MemoryBudget.from_environment()


@st.cache_resource(show_spinner=False)
def training_queue() -> jobs.TrainingQueue:
    """The one queue of trainings of this process."""
    return jobs.TrainingQueue(limits().max_trainings, memory_budget().training_bytes)


@st.cache_resource(show_spinner=False)
def composers() -> sessions.Composers:
    """Loaded models, within the memory kept for them."""
    return sessions.Composers(memory_budget().model_bytes, list(styles()))


@st.cache_resource(show_spinner=False)
def renderer() -> sessions.Renderer:
    """FluidSynth, as many pieces at a time as there are cores and memory for."""
    return sessions.Renderer(min(memory_budget().renders, os.cpu_count() or 1))


@st.cache_resource(show_spinner=False)
def music_indexes() -> sessions.MusicIndexes:
    """Originality indexes of training music, built in the background."""
    return sessions.MusicIndexes()


@st.cache_data(show_spinner=False)
def read_examples(folder: str) -> Corpus:
    """The example pieces shipped with the app."""
    return load_corpus((path.name, path.read_bytes()) for path in sorted(Path(folder).glob("*.mid")))


# Helpers of the page.


@contextmanager
def plain_errors(doing: str):
    """Show any error as one plain sentence: ours are logged, the user never sees a traceback."""
    try:
        yield
    except Exception as error:  # noqa: BLE001 - whatever happens, the page says it plainly
        message = sessions.plain_message(error)
        if message is None:
            log.exception("unexpected error while trying to %s", doing)
            message = sessions.GENERIC_ERROR
        st.error(f"Could not {doing}. {message}", icon=":material/error:")


def markdown_text(text: str) -> str:
    """Text with Markdown's special characters escaped, for file names and messages."""
    return re.sub(r"([\\`*_{}\[\]()#+\-.!|<>~$])", r"\\\1", text)


def duration_text(seconds: float) -> str:
    """'45 s', '3 min', '1 h 5 min'."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"


def model_title(folder: str) -> str:
    """How the model list names a model folder."""
    if Path(folder) in styles():
        return f"{styles()[Path(folder)].title} (built in)"
    return model_summary(Path(folder)).title


def weights_time(folder: Path) -> float:
    """When a model's weights last changed (0 when they are missing)."""
    try:
        return (folder / WEIGHTS_FILE).stat().st_mtime
    except OSError:
        return 0.0


# Per-visitor state.


def workspace() -> Workspace:
    """This visitor's folder, made on the first visit (which also clears out old ones now and then)."""
    if "workspace" not in st.session_state:
        root = runs_root()
        st.session_state.workspace = Workspace.create(root)
        keep = training_queue().active_owners() | {st.session_state.workspace.session_id}
        remove_old_workspaces_now_and_then(root, limits(), keep)
    space = st.session_state.workspace
    space.touch()
    return space


def current_job() -> jobs.TrainingJob | None:
    return st.session_state.get("job")


def select_finished_model() -> None:
    """Once a training ends with weights, make its model the one to compose with (before the list is drawn)."""
    job = current_job()
    if job is None or st.session_state.get("job_seen_ending") == job.number:
        return
    progress = job.snapshot()
    if progress.active:
        return
    st.session_state.job_seen_ending = job.number
    if progress.run_dir is not None and weights_time(progress.run_dir):
        st.session_state.model_choice = str(progress.run_dir)


def training_folders() -> list[Path]:
    """Folders a queued or running training of this visitor needs: clean-up must not remove them."""
    job = current_job()
    if job is None or not job.snapshot().active:
        return []
    return [job.run_dir] + ([job.request.start_from] if job.request.start_from else [])


def busy_folder() -> Path | None:
    """The run folder a queued or running training of this visitor writes into."""
    job = current_job()
    return job.run_dir if job is not None and job.snapshot().active else None


# Callbacks (they run before the page is drawn again).


def reroll_seed() -> None:
    st.session_state.seed = sessions.new_seed()


def reroll_seed_if_asked() -> None:
    if st.session_state.get("new_seed_each_time", True):
        reroll_seed()


def keep_typed_seed() -> None:
    st.session_state.new_seed_each_time = False


def open_model_zip() -> None:
    """Unpack an uploaded model and choose it; a bad file leaves everything else as it was."""
    uploaded = st.session_state.get("model_zip")
    if uploaded is None:
        return
    try:
        if uploaded.size > MAX_BUNDLE_BYTES:  # refused before its bytes are copied
            raise ValueError(f"this model file is over the {MODEL_UPLOAD_MEGABYTES} MB limit")
        folder = workspace().open_model_zip(uploaded.name, uploaded.getvalue(), limits(), keep=training_folders())
    except Exception as error:  # noqa: BLE001 - reported on the page
        message = sessions.plain_message(error)
        if message is None:
            log.exception("cannot open the model %s", uploaded.name)
            message = sessions.GENERIC_ERROR
        st.session_state.model_message = ("error", f"Could not open {uploaded.name}. {message}")
        return
    st.session_state.model_choice = str(folder)
    st.session_state.model_message = ("success", f"Opened {uploaded.name}: it is now the model you compose with.")


# The page, top to bottom.


def header() -> None:
    st.title("musicgen")
    st.markdown(
        "Compose new music with a neural network. Press **Compose** to hear a piece in the style chosen on "
        "the left, or teach it your own MIDI files further down."
    )


def choose_model(space: Workspace) -> Path:
    """The model list in the sidebar; the folder chosen."""
    busy = busy_folder()
    options = [str(style) for style in styles()] + [str(folder) for folder in space.model_folders() if folder != busy]
    if st.session_state.get("model_choice") not in options:
        st.session_state.model_choice = options[0]
    with st.sidebar:
        st.header("Style")
        choice = st.selectbox(
            "Compose in the style of",
            options,
            format_func=model_title,
            key="model_choice",
            help="A built-in style, each a network trained on its own music. Models you train or open appear here.",
        )
        if Path(choice) not in styles():
            st.caption(markdown_text(model_summary(Path(choice)).details))
    return Path(choice)


def load_model(folder: Path) -> sessions.Composer | None:
    """The composer of a model folder, loaded once per process; None (and a message) when it cannot be."""
    if not weights_time(folder):
        if folder in styles():
            st.error(f"The model that comes with musicgen is missing: there is no trained model in {folder}.")
        return None
    with st.spinner("Getting the composer ready (only the first time)…"), plain_errors("load the model"):
        return composers().get(folder, weights_time(folder))
    return None


def get_ready(folder: Path, loaded: sessions.Composer | None) -> None:
    """Once the page is drawn: index the shipped model's music for originality."""
    if loaded is not None and folder in styles() and styles()[folder].music.is_dir():
        with plain_errors("prepare the model"):
            music_indexes().start(styles()[folder].music, loaded.info.vocabulary.config.steps_per_beat)


def keep_model(folder: Path, loaded: sessions.Composer | None) -> None:
    """Sidebar: download the model as one zip file, or open one saved before."""
    with st.sidebar:
        st.header("Keep your model")
        if loaded is not None:
            st.download_button(
                "Download this model (.zip)",
                data=lambda: model_zip(folder),
                file_name=f"musicgen-model-{model_name(folder)}.zip",
                mime="application/zip",
                on_click="ignore",
                help="One file with everything the model learned. Open it here on a later visit.",
            )
        st.file_uploader(
            "Open a model you downloaded before",
            type=["zip"],
            key="model_zip",
            on_change=open_model_zip,
            max_upload_size=MODEL_UPLOAD_MEGABYTES,
            help="A .zip file downloaded from musicgen: compose with it, or train it further.",
        )
        kind, message = st.session_state.get("model_message", (None, None))
        if kind == "error":
            st.error(message)
        elif kind == "success":
            st.success(message)


def model_zip(folder: Path) -> bytes:
    """The model as one zip file (made when the download button is clicked)."""
    from musicgen.bundle import bundle_to_zip

    return bundle_to_zip(folder)


def compose_section(loaded: sessions.Composer, folder: Path, uploads: Corpus | None) -> None:
    """The controls of a generation and the Compose button."""
    from musicgen.sample import SampleConfig, key_names

    st.header("Compose")
    st.session_state.setdefault("seed", sessions.new_seed())
    primers = primer_choices(uploads)
    sound, character, start = st.columns(3)
    with sound:
        written = [AS_WRITTEN] if loaded.info.vocabulary.config.instruments else []
        instrument = st.selectbox(
            "Instrument",
            written + list(INSTRUMENTS),
            help="The instrument that plays the piece (General MIDI); drums stay drums.",
        )
        bpm = st.slider("Tempo (beats per minute)", 40, 200, 90, 5, help="How fast the piece is played.")
        seconds = st.slider("Length (seconds)", 10, 120, 30, 5, help="How long the piece lasts.")
    with character:
        temperature = temperature_slider(loaded.recommended_temperatures)
        top_p = st.slider(
            "Top-p", 0.5, 1.0, 0.95, 0.01, help="Lower leaves out the least likely notes: fewer odd surprises."
        )
        key = st.selectbox(
            "Key lock",
            [KEY_OFF, KEY_AUTO, *key_names()],
            help="Only notes of this key are played; 'the key of the music I gave' finds it for you.",
        )
    with start:
        openings = [OPENINGS] if loaded.info.openings else []
        primer_name = st.selectbox(
            "Start from",
            [*openings, NO_PRIMER, *primers],
            help="The piece goes on from the opening of this piece. A model that learned your music starts "
            "from the first notes of one of your pieces (another one for each variation), so that it plays "
            "your instruments in your style.",
        )
        primer_notes = 16
        if primer_name in primers:
            primer_notes = st.slider(
                "Notes taken from it", 4, 64, 16, 4, help="How much of its opening the piece starts with."
            )
        variations = st.slider("Variations", 1, 4, 1, help="How many different pieces to compose at once.")
        seed_controls()
    if not st.button("Compose", type="primary", on_click=reroll_seed_if_asked, help="Write a new piece."):
        return
    primer = primers.get(primer_name)
    if key == KEY_AUTO:
        key = sessions.key_of_music([primer] if primer is not None else list(uploads.scores) if uploads else [])
        if key is None:
            st.info("There is no music of yours to take a key from yet, so the key lock is off.")
    with plain_errors("compose"):
        config = SampleConfig(
            temperature=temperature,
            top_p=top_p,
            max_notes=min(5000, 20 * seconds),  # room for dense music; the length in seconds ends it first
            max_seconds=float(seconds),
            seed=int(st.session_state.seed),
            variations=variations,
            key=None if key == KEY_OFF else key,
            bpm=float(bpm),
        )
        name, program = model_name(folder), INSTRUMENTS.get(instrument)  # None: as written
        fresh_start = primer_name == NO_PRIMER
        pieces = sessions.compose(loaded, config, name, program, primer, primer_notes, fresh_start)
        workspace().forget_pieces()
        info = loaded.info
        results = sessions.Results(
            pieces, folder, info.fingerprint, info.vocabulary.config.steps_per_beat, config.max_seconds
        )
        if not audio.synth_problem():  # each piece renders while the ones before it are shown
            results.renders = {
                piece.variation: renderer().submit(piece.midi_bytes, piece.variation) for piece in pieces
            }
        st.session_state.results = results


def primer_choices(uploads: Corpus | None) -> dict:
    """Pieces a new piece may start from: the visitor's usable files, then the examples."""
    examples = read_examples(str(EXAMPLES)) if EXAMPLES.is_dir() else load_corpus([])
    choices = {}
    for corpus, kind in ((uploads, "yours"), (examples, "example")):
        if corpus is not None:
            choices |= {f"{name} ({kind})": score for name, score in zip(corpus.names, corpus.scores, strict=True)}
    return choices


def temperature_slider(recommended: tuple[float, float] | None) -> float:
    """The temperature, starting in the middle of the model's recommended range when it has one."""
    default = round((recommended[0] + recommended[1]) / 2 * 20) / 20 if recommended else 1.0
    temperature = st.slider(
        "Temperature",
        0.1,
        2.0,
        float(min(max(default, 0.1), 2.0)),
        0.05,
        help="Low: safe and repetitive. High: adventurous, and at some point chaotic.",
    )
    if recommended:
        st.caption(f"Recommended for this model: {recommended[0]:.2f} to {recommended[1]:.2f}.")
    return temperature


def seed_controls() -> None:
    """The seed, a button for a new one, and whether Compose picks a new one each time."""
    seed_column, button_column = st.columns([3, 2], vertical_alignment="bottom")
    seed_column.number_input(
        "Seed",
        0,
        2**31 - 1,
        key="seed",
        on_change=keep_typed_seed,
        help="The same seed with the same settings gives the same piece.",
    )
    button_column.button("New seed", icon=":material/casino:", on_click=reroll_seed, help="Pick a new random seed.")
    st.toggle(
        "New seed at each Compose",
        value=True,
        key="new_seed_each_time",
        help="Turn off to compose the piece of the seed shown again.",
    )


def results_section(space: Workspace) -> None:
    """The pieces of the last Compose: sound, piano roll, downloads and originality."""
    results: sessions.Results | None = st.session_state.get("results")
    if results is None:
        return
    problem = audio.synth_problem()
    if problem:
        st.info(f"No sound on this computer: {problem}. You can still see the notes and download the MIDI.")
    below = []  # under each piece's player: its notes, downloads and originality, filled in once all can be heard
    for piece in results.pieces:
        st.subheader(f"Piece {piece.variation}" if len(results.pieces) > 1 else "Your piece")
        with plain_errors("play this piece"):
            introduce_and_play(results, piece, space, problem)
        below.append(st.container())
    for piece, container in zip(results.pieces, below, strict=True):
        with container, plain_errors("show this piece"):
            show_notes(results, piece)
    for piece, container in zip(results.pieces, below, strict=True):
        with container:
            originality(results, piece, space)


def introduce_and_play(results: sessions.Results, piece: sessions.Piece, space: Workspace, problem: str | None):
    """What the piece is, and its sound (unless the synthesizer is missing)."""
    score = piece.score
    st.caption(f"Seed {piece.seed} · {score.duration_seconds:.0f} seconds · {len(score.notes)} notes")
    if score.duration_seconds < results.seconds_asked / 2:
        st.info(
            f"The model ended this piece after {score.duration_seconds:.0f} seconds, as the music it "
            "learned from ends. Press Compose again for another one."
        )
    if not problem:
        play(results, piece, space)


def show_notes(results: sessions.Results, piece: sessions.Piece) -> None:
    """The piano roll of a piece and its downloads."""
    if piece.variation not in results.figures:
        results.figures[piece.variation] = plots.piano_roll(piece.score, piece.primer)
    st.markdown(results.figures[piece.variation], unsafe_allow_html=True)
    downloads(results, piece)


def play(results: sessions.Results, piece: sessions.Piece, space: Workspace) -> None:
    """The audio player of a piece, rendered once and kept in the workspace."""
    number = piece.variation
    missing = number not in results.audio or not results.audio[number].exists()
    if missing and number not in results.audio_errors:
        try:
            render = results.renders.pop(number, None) or renderer().submit(piece.midi_bytes, number)
            results.audio[number] = space.keep_audio(piece.file_stem, render.result(), audio.AUDIO_EXTENSION)
        except audio.AudioError as error:
            results.audio_errors[number] = sessions.plain_message(error) or sessions.GENERIC_ERROR
    if number in results.audio_errors:
        st.warning(f"No sound for this piece: {results.audio_errors[number]}")
    else:
        st.audio(results.audio[number].read_bytes(), format=audio.AUDIO_MIME)


def downloads(results: sessions.Results, piece: sessions.Piece) -> None:
    midi_column, audio_column, _ = st.columns([1, 1, 3])
    midi_column.download_button(
        "Download MIDI",
        piece.midi_bytes,
        file_name=f"{piece.file_stem}.mid",
        mime="audio/midi",
        on_click="ignore",
        key=f"midi-{piece.variation}",
        help="The notes, for any music program.",
    )
    if piece.variation in results.audio:
        audio_column.download_button(
            "Download audio",
            results.audio[piece.variation].read_bytes,  # read when clicked: no second copy in memory
            file_name=f"{piece.file_stem}.{audio.AUDIO_EXTENSION}",
            mime=audio.AUDIO_MIME,
            on_click="ignore",
            key=f"audio-{piece.variation}",
            help="The sound, as an MP3 file.",
        )


def originality(results: sessions.Results, piece: sessions.Piece, space: Workspace) -> None:
    """How much of the piece is borrowed from the music the model learned from, in words."""
    from musicgen.originality import measure_originality

    number = piece.variation
    if number not in results.originality:
        waiting = st.spinner("Comparing with the music the model learned from…")
        # Trainings pause while someone waits for the index: its child process runs at the lowest priority.
        with waiting, sessions.FOREGROUND.making_music(), plain_errors("measure originality"):
            built_in = styles().get(results.model_folder)
            folder = space.corpus_folder(results.corpus_fingerprint) or (built_in.music if built_in else SHIPPED_MUSIC)
            found = music_indexes().get(folder, results.steps_per_beat) if folder.is_dir() else None
            if found is None or found.fingerprint != results.corpus_fingerprint:
                st.caption("Originality: the music this model learned from is not here to compare with.")
                return
            measured = measure_originality(piece.score, found.index)
            results.originality[number] = (measured.plain_summary(), measured.copies_long_passages)
    if number in results.originality:
        summary, copies = results.originality[number]
        (st.warning if copies else st.caption)(f"Originality: {summary}")


def read_uploaded(files) -> Corpus | None:
    """What was read from the uploaded files, one report per file (None without files). Read once per upload
    and visitor, and only this visitor's last upload is kept: uploads may be big."""
    if not files:
        return None
    key = tuple(file.file_id for file in files)  # Streamlit's id of each upload: no bytes copied to compare
    if st.session_state.get("uploads_read", (None,))[0] != key:
        st.session_state.uploads_read = (key, load_corpus(uploaded_bytes(files), limits=UploadLimits()))
    return st.session_state.uploads_read[1]


def uploaded_bytes(files) -> tuple[tuple[str, bytes], ...]:
    """(name, bytes) of the uploaded files, as far as they will be read."""
    return tuple((file.name, upload_bytes(file, number)) for number, file in enumerate(files, 1))


def upload_bytes(file, number: int) -> bytes:
    """The bytes of the number-th uploaded file that will be read: none past the upload's file limit (the
    corpus reports it unread), and never more than one byte over the size limit (midi.read refuses it)."""
    if number > UploadLimits().max_files:
        return b""
    file.seek(0)
    return file.read(MAX_FILE_BYTES + 1)


def training_section(space: Workspace, model_folder: Path) -> None:
    """Upload MIDI files, set up a training, start it and watch it."""
    st.header("Teach it your own music")
    st.markdown("Upload MIDI files, then press **Train**: a new model learns from them, epoch by epoch.")
    files = st.file_uploader(
        "Your MIDI files (.mid, .midi)",
        type=["mid", "midi"],
        accept_multiple_files=True,
        key="midi_files",
        max_upload_size=MIDI_UPLOAD_MEGABYTES,
        help="Several files at once, up to 2 MB each. Files that cannot be used are listed with the reason.",
    )
    music = read_uploaded(files)
    for report in music.reports if music else ():
        icon = ":material/check_circle:" if report.error is None else ":material/block:"
        st.markdown(f"{icon} {markdown_text(report.summary)}")
    if music:
        st.caption(markdown_text(music.summary))
    train_settings, model_settings, continue_from = training_controls(model_folder)
    job = current_job()
    busy = job is not None and job.snapshot().active
    train_help = "Start training, or go on from where the same music and settings stopped last time."
    clicked = st.button("Train", type="primary", disabled=busy or music is None, help=train_help)
    if clicked and not busy:  # a click replayed into a later run must not start a second training
        with plain_errors("start training"):
            start_training(space, uploaded_bytes(files), music, train_settings, model_settings, continue_from)
    if music is None and not busy:
        st.caption("Upload at least one MIDI file to train.")
    job = current_job()
    progress = job.snapshot() if job is not None else None
    if progress is not None and (progress.active or time.monotonic() - progress.ended_at < PANEL_AFTER_END_SECONDS):
        training_panel()
        loss_curve_panel()
    elif progress is not None:
        show_status(progress)
        show_loss_curve(progress)


def training_controls(model_folder: Path) -> tuple[dict, dict, Path | None]:
    """Training settings, model size and the model to start from (None: a new one)."""
    epochs_column, length_column, start_column = st.columns(3)
    epochs = epochs_column.slider(
        "Epochs", 1, 100, 10, help="How many times the model reads all your music. More takes longer."
    )
    sequence_length = length_column.select_slider(
        "Sequence length",
        sequence_lengths_that_fit(model_folder),
        64,
        help="How many notes and rests (tokens) the model reads at once while it learns. Long ones need "
        "much memory: then each batch is learned in smaller steps, which is slower.",
    )
    starts = ["a new model", *(["all the built-in styles"] if (jobs.BASE_MODEL / WEIGHTS_FILE).is_file() else [])]
    start_from = start_column.radio(
        "Start from",
        [*starts, "the model you compose with"],
        help="A new model learns only your music. All the built-in styles: a model that knows every built-in style "
        "learns yours on top, within three minutes (best for a handful of files). The model you compose with "
        "also keeps what it knew and learns yours on top.",
    )
    with st.expander("Advanced: model size"):
        layers = st.select_slider(
            "Layers", jobs.LAYER_CHOICES, 2, help="Stacked LSTM layers: more can learn more, and are slower."
        )
        units = st.select_slider("Units per layer", jobs.UNIT_CHOICES, 128, help="The size of each layer's memory.")
        transpose = st.slider(
            "Transpose while learning (semitones)",
            0,
            6,
            0,
            help="Also learn your music moved up and down by up to this much: more to learn from.",
        )
        st.caption(
            "Starting from a trained model keeps its own size, and trains for as many epochs as fit in about "
            "three minutes (at least those asked for), stops once it no longer improves, and keeps the best."
        )
    train_settings = dict(epochs=epochs, sequence_length=sequence_length, transpose_semitones=transpose)
    folders = {"all the built-in styles": jobs.BASE_MODEL, "the model you compose with": model_folder}
    continue_from = folders.get(start_from)
    return train_settings, dict(layers=layers, units=units), continue_from


def sequence_lengths_that_fit(model_folder: Path) -> list[int]:
    """The sequence lengths every model size offered (and the model composed with) can train at in memory."""
    from musicgen.bundle import BundleError, describe_bundle
    from musicgen.settings import ModelConfig

    largest = dict(layers=max(jobs.LAYER_CHOICES), units=max(jobs.UNIT_CHOICES), embedding_size=64)
    models = [ModelConfig(**largest, vocabulary_size=len(jobs.NEW_MODEL_VOCABULARY))]
    try:
        models.append(describe_bundle(model_folder).model_config)
    except BundleError:
        pass  # a damaged model cannot be trained further anyway; the page says so where it is chosen
    lengths = list(jobs.SEQUENCE_LENGTH_CHOICES)
    for model in models:
        lengths = memory.sequence_lengths_that_fit(model, lengths, MAX_CORPUS_TOKENS, memory_budget().training_bytes)
    return lengths or [min(jobs.SEQUENCE_LENGTH_CHOICES)]


def start_training(space, files, music, train_settings: dict, model_settings: dict, continue_from) -> None:
    """Check and plan the request, make room on disk, keep the music for originality and queue the job."""
    from musicgen.settings import ModelConfig, TrainConfig

    config = TrainConfig(**train_settings)
    request = jobs.TrainingRequest(music, ModelConfig(**model_settings), config, continue_from)
    request = jobs.plan_request(request, memory_budget().training_bytes)
    if request.train_config.accumulation_steps > 1:
        st.info(
            f"These settings need more memory than one step may have here, so each batch is learned in "
            f"{request.train_config.accumulation_steps} smaller steps: the same training, only slower."
        )
    needed = jobs.estimated_run_bytes(request)
    keep = [jobs.planned_run_folder(request, space)] + ([continue_from] if continue_from else [])
    removed = space.save_corpus(files, music, limits(), keep) + space.make_room(needed, limits(), keep)
    if removed:
        st.info(f"To make room, your oldest models were removed: {', '.join(removed)}.")
    job = jobs.TrainingJob(request, space, limits().abandon_seconds)
    st.session_state.job = training_queue().submit(job)


@st.fragment(run_every=PROGRESS_SECONDS)
def training_panel() -> None:
    """The training's progress, redrawn every PROGRESS_SECONDS, with a Stop button while it is on.

    Always this one fragment (one id), so that the browser's timer for it stays valid from
    one training to the next. When the training ends, the whole page is drawn once more:
    the new model joins the list on the left.
    """
    job = current_job()
    progress = job.snapshot()
    ended_unseen = not progress.active and st.session_state.get("job_seen_ending") != job.number
    if ended_unseen and not first_draw_in_this_page_run():
        st.rerun()
    show_status(progress)
    if progress.active:
        st.button(
            "Stop training",
            on_click=job.request_stop,
            disabled=progress.stopping,
            help="Stop after the current step. The epochs done are kept: Train goes on from there.",
        )


@st.fragment(run_every=CURVE_SECONDS)
def loss_curve_panel() -> None:
    """The loss curve, redrawn less often than the progress: drawing it costs the browser most."""
    show_loss_curve(current_job().snapshot())


def first_draw_in_this_page_run() -> bool:
    """True when the progress panel is drawn as part of the whole page rather than on its own.

    Then st.rerun() must wait for the panel's own next redraw: stopping a page run that a
    click started makes Streamlit replay that click in the next run (a second Train).
    """
    first = st.session_state.get("panel_drawn_in_run") != st.session_state.page_run
    st.session_state.panel_drawn_in_run = st.session_state.page_run
    return first


def show_status(progress: jobs.Progress) -> None:
    """Queue place, epoch, times and plain words on how it went."""
    if progress.state == "queued":
        ahead = "You are next" if progress.place_in_queue <= 1 else f"You are number {progress.place_in_queue}"
        st.info(f"Waiting for a free trainer: {ahead} in the queue. You can compose meanwhile.")
        return
    if progress.resumed_after_epoch:
        st.info(f"Resumed after epoch {progress.resumed_after_epoch}: the epochs trained before were kept.")
    done = min(progress.epoch, progress.epochs)
    label = f"Epoch {min(done + 1, progress.epochs) if progress.active else done} of {progress.epochs}"
    if progress.active and progress.steps_per_epoch > 1:
        label += f", step {progress.step_in_epoch} of {progress.steps_per_epoch}"
    if progress.active and progress.step == 0:
        label += " (the model is being prepared)"
    st.progress(progress.share_done, text=label)
    per_epoch, left = progress.seconds_per_epoch, progress.seconds_left
    columns = st.columns(3)
    columns[0].metric("Epochs done", f"{done} of {progress.epochs}")
    columns[1].metric("Time per epoch", duration_text(per_epoch) if per_epoch else "…")
    if progress.active:
        columns[2].metric("Time left", f"about {duration_text(left)}" if left is not None else "…")
    if progress.stopping:
        st.info("Stopping after the current step…")
    if progress.state == "finished":
        st.success(
            progress.message
            or f"Training finished: {progress.epoch} epochs. Your model is chosen on the left: press Compose."
        )
        if progress.likeness:
            st.markdown("**How close its music is to yours** (six pieces it composed):")
            st.markdown("\n".join(f"- {line}" for line in progress.likeness))
    elif progress.state == "stopped":
        st.info(progress.message or "Stopped.")
    elif progress.state == "failed":
        st.error(f"Training failed. {progress.message}")


def show_loss_curve(progress: jobs.Progress) -> None:
    """The loss per epoch, what loss means, and a warning when the model memorises."""
    if not progress.history:
        return
    st.plotly_chart(plots.loss_curve(list(progress.history)), key="loss-curve")
    st.caption(LOSS_EXPLANATION)
    best = progress.memorising_since
    if best is not None:
        st.warning(
            f"The model has started to memorise your music instead of learning its style: its validation "
            f"loss has gone up since epoch {best} while its training loss kept going down. The best epoch "
            f"({best}) is the one kept. More music, or a smaller model, helps."
        )


# Layout.

server_log()
keep_keras_between_runs()
st.session_state.page_run = st.session_state.get("page_run", 0) + 1
header()
try:
    server_settings = limits(), memory_budget(), runs_root()  # named: a bare expression would be drawn (magic)
except ValueError as error:
    st.error(f"The server's settings cannot be used. {sessions.sentence(str(error))}", icon=":material/error:")
    st.stop()
space = workspace()
select_finished_model()
model_folder = choose_model(space)
loaded = load_model(model_folder)
keep_model(model_folder, loaded)
if loaded is not None:
    compose_section(loaded, model_folder, read_uploaded(st.session_state.get("midi_files")))
results_section(space)
st.divider()
training_section(space, model_folder)
get_ready(model_folder, loaded)
