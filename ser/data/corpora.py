"""Lists a corpus' utterances, reading labels and speakers from file names only.

Every corpus spells emotions its own way (German initials in EMODB, letter prefixes in
SAVEE, English words in mixed case in TESS, numeric codes in RAVDESS), so all of them are
mapped onto one canonical English vocabulary; that lets a model trained on one corpus be scored on another. Nothing
here decodes audio: listing a corpus must stay cheap and must not fail on a broken clip,
which ``ser.dsp.audio`` reports later with its own message.
"""

from __future__ import annotations

import csv
import logging
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from ser.data.problems import Problems
from ser.dsp.audio import AUDIO_SUFFIXES
from ser.errors import DataError

log = logging.getLogger(__name__)

CANONICAL_LABELS: tuple[str, ...] = (
    "anger",
    "boredom",
    "calm",
    "disgust",
    "fear",
    "happiness",
    "neutral",
    "sadness",
    "surprise",
)

_ALIASES: dict[str, str] = {
    "angry": "anger",
    "bored": "boredom",
    "disgusted": "disgust",
    "fearful": "fear",
    "happy": "happiness",
    "joy": "happiness",
    "sad": "sadness",
    "surprised": "surprise",
    "ps": "surprise",
    "pleasant_surprise": "surprise",
    "pleasant_surprised": "surprise",
    **{label: label for label in CANONICAL_LABELS},
}

_EMODB_EMOTIONS = {
    "W": "anger",
    "L": "boredom",
    "E": "disgust",
    "A": "fear",
    "F": "happiness",
    "T": "sadness",
    "N": "neutral",
}
_EMODB_NAME = re.compile(r"(?P<speaker>\d{2})[a-z]\d{2}(?P<emotion>[WLEAFTN])[a-z]", re.IGNORECASE)
_EMODB_CONVENTION = "<speaker:2><text:3><emotion:1><version:1>.wav, e.g. 03a01Fa.wav"

_SAVEE_EMOTIONS = {
    "a": "anger",
    "d": "disgust",
    "f": "fear",
    "h": "happiness",
    "n": "neutral",
    "sa": "sadness",
    "su": "surprise",
}
_SAVEE_SPEAKERS = ("DC", "JE", "JK", "KL")
_SAVEE_CLIP = r"(?P<emotion>sa|su|a|d|f|h|n)\d+"
_SAVEE_FLAT = re.compile(rf"(?P<speaker>{'|'.join(_SAVEE_SPEAKERS)})_{_SAVEE_CLIP}", re.IGNORECASE)
_SAVEE_NESTED = re.compile(_SAVEE_CLIP, re.IGNORECASE)
_SAVEE_CONVENTION = (
    f"<speaker>/<emotion><nn>.wav or <speaker>_<emotion><nn>.wav with speaker {'/'.join(_SAVEE_SPEAKERS)} "
    f"and emotion {'/'.join(_SAVEE_EMOTIONS)}, e.g. DC/a01.wav or DC_a01.wav"
)

_TESS_SPEAKERS = ("OAF", "YAF")
_TESS_CONVENTION = (
    f"<speaker>_<word>_<emotion>.wav or a <speaker>_<emotion> folder with speaker {'/'.join(_TESS_SPEAKERS)}, "
    "e.g. OAF_angry/OAF_back_angry.wav"
)

# RAVDESS names every file <modality>-<vocal channel>-<emotion>-<intensity>-<statement>-<repetition>-<actor>;
# modality 03 is audio-only and vocal channel 01 speech (02, song, is another task with six emotions).
_RAVDESS_EMOTIONS = {
    "01": "neutral",
    "02": "calm",
    "03": "happiness",
    "04": "sadness",
    "05": "anger",
    "06": "fear",
    "07": "disgust",
    "08": "surprise",
}
_RAVDESS_NAME = re.compile(
    r"(?P<modality>0[1-3])-(?P<channel>0[12])-(?P<emotion>0[1-8])-0[12]-0[12]-0[12]-(?P<actor>\d{2})"
)
_RAVDESS_CONVENTION = (
    "Actor_<nn>/<modality>-<channel>-<emotion>-<intensity>-<statement>-<repetition>-<actor>.wav (or .flac), "
    "e.g. Actor_01/03-01-05-01-01-01-01.wav"
)

_MANIFEST_COLUMNS = ("path", "label")


@dataclass(frozen=True)
class Utterance:
    """One labelled recording; ``speaker`` is ``""`` when the source does not say."""

    path: Path
    label: str
    speaker: str


@dataclass(frozen=True)
class Corpus:
    """How to list a corpus, and what to tell a user who does not have it yet."""

    name: str
    parse: Callable[[Path, Problems], list[Utterance]]
    download_hint: str
    layout_hint: str


def canonical_label(name: str) -> str | None:
    """The canonical label for a corpus' own spelling, or None when it names no known emotion."""
    return _ALIASES.get(re.sub(r"[\s\-]+", "_", name.strip().lower()))


def class_order(labels: Iterable[str]) -> list[str]:
    """Distinct labels in a fixed order, so class indices agree across runs and corpora."""
    distinct = set(labels)
    known = [label for label in CANONICAL_LABELS if label in distinct]
    return known + sorted(distinct.difference(known))


def _not_found(corpus: Corpus, source: Path | None) -> DataError:
    where = "location is not set" if source is None else f"not found at {source}"
    return DataError(f"{corpus.name.upper()} {where}: {corpus.download_hint}; expected layout {corpus.layout_hint}")


def _audio_files(root: Path, corpus: Corpus) -> list[Path]:
    """Every audio file (``AUDIO_SUFFIXES``) below ``root``, however deep an archive nested it.

    Copies of corpora are often re-encoded losslessly (FLAC is a third of WAV's size), so any
    format soundfile decodes counts, not only the release's ``.wav``. Dot files are left
    out: unpacking a macOS zip leaves ``._03a01Fa.wav`` resource forks beside the audio,
    and those are neither audio nor mislabelled recordings.
    """
    if not root.is_dir():
        raise _not_found(corpus, root)
    files = sorted(
        path
        for path in root.absolute().rglob("*")
        if path.suffix.lower() in AUDIO_SUFFIXES and not path.name.startswith(".") and path.is_file()
    )
    if not files:
        raise DataError(
            f"no audio files ({' '.join(AUDIO_SUFFIXES)}) found under {root}; "
            f"expected {corpus.name.upper()} layout {corpus.layout_hint}"
        )
    return files


def _parse_names(
    root: Path,
    problems: Problems,
    corpus: Corpus,
    convention: str,
    read: Callable[[Path], tuple[str, str] | None],
    other_task: Callable[[Path], bool] | None = None,
) -> list[Utterance]:
    """The utterances whose names ``read`` understands; each other one is a reported problem.

    Files that ``other_task`` recognises belong to the same release but not to this corpus
    (RAVDESS's song recordings beside its speech): they are left out with one log line.
    """
    utterances, others = [], 0
    for path in _audio_files(root, corpus):
        if other_task is not None and other_task(path):
            others += 1
            continue
        named = read(path)
        if named is None:
            problems.report(f"{path}: name does not match the {corpus.name.upper()} convention {convention}")
            continue
        label, speaker = named
        utterances.append(Utterance(path, label, speaker))
    if others:
        log.info("%s: left out %d file(s) of another %s task", root, others, corpus.name.upper())
    return utterances


def _read_emodb(path: Path) -> tuple[str, str] | None:
    match = _EMODB_NAME.fullmatch(path.stem)
    if match is None:
        return None
    return _EMODB_EMOTIONS[match["emotion"].upper()], match["speaker"]


def _read_savee(path: Path) -> tuple[str, str] | None:
    """Flat names carry the speaker (``DC_a01``); the original release keeps it in the folder."""
    match = _SAVEE_FLAT.fullmatch(path.stem)
    if match is not None:
        return _SAVEE_EMOTIONS[match["emotion"].lower()], match["speaker"].upper()
    folder = path.parent.name.upper()
    match = _SAVEE_NESTED.fullmatch(path.stem)
    if match is None or folder not in _SAVEE_SPEAKERS:
        return None
    return _SAVEE_EMOTIONS[match["emotion"].lower()], folder


def _tess_speaker(name: str) -> str | None:
    speaker = name.split("_", 1)[0].upper()
    return speaker if speaker in _TESS_SPEAKERS else None


def _read_tess(path: Path) -> tuple[str, str] | None:
    """The file name decides; the ``<speaker>_<emotion>`` folder fills in what it lacks.

    The folder's emotion is everything after the speaker because ``pleasant_surprised``
    spans two tokens there, while file names abbreviate it to the last token ``ps``.
    """
    folder_label = canonical_label(path.parent.name.partition("_")[2])
    label = canonical_label(path.stem.rsplit("_", 1)[-1]) or folder_label
    speaker = _tess_speaker(path.stem) or _tess_speaker(path.parent.name)
    if label is None or speaker is None:
        return None
    return label, speaker


def _read_ravdess(path: Path) -> tuple[str, str] | None:
    match = _RAVDESS_NAME.fullmatch(path.stem)
    if match is None or match["modality"] != "03" or match["channel"] != "01":
        return None
    return _RAVDESS_EMOTIONS[match["emotion"]], match["actor"]


def _ravdess_song(path: Path) -> bool:
    match = _RAVDESS_NAME.fullmatch(path.stem)
    return match is not None and match["modality"] == "03" and match["channel"] == "02"


def parse_emodb(root: Path, problems: Problems) -> list[Utterance]:
    """EMODB, in ``<root>/wav/`` as released or with the clips directly under ``root``."""
    return _parse_names(root, problems, CORPORA["emodb"], _EMODB_CONVENTION, _read_emodb)


def parse_savee(root: Path, problems: Problems) -> list[Utterance]:
    """SAVEE as released (``AudioData/DC/a01.wav``) or flattened (Kaggle's ``ALL/DC_a01.wav``)."""
    return _parse_names(root, problems, CORPORA["savee"], _SAVEE_CONVENTION, _read_savee)


def parse_tess(root: Path, problems: Problems) -> list[Utterance]:
    """TESS at any depth, so Kaggle's extra ``TESS Toronto emotional speech set data/`` level works."""
    return _parse_names(root, problems, CORPORA["tess"], _TESS_CONVENTION, _read_tess)


def parse_ravdess(root: Path, problems: Problems) -> list[Utterance]:
    """RAVDESS speech (``Audio_Speech_Actors_01-24``): eight emotions, ``calm`` kept as its own class.

    Song recordings (vocal channel 02) are another task, sung, with six emotions: a folder
    holding both keeps the speech and logs how many song files it left out.
    """
    return _parse_names(root, problems, CORPORA["ravdess"], _RAVDESS_CONVENTION, _read_ravdess, _ravdess_song)


def _cell(row: dict[str | None, str | None], column: str) -> str:
    """A stripped cell; short rows leave ``None`` where a column has no value."""
    return (row.get(column) or "").strip()


def parse_manifest(manifest: Path, problems: Problems) -> list[Utterance]:
    """Any corpus, listed in a CSV; labels outside the canonical set are kept, lower-cased."""
    if not manifest.is_file():
        raise _not_found(CORPORA["manifest"], manifest)
    manifest = manifest.absolute()
    try:
        with manifest.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = [name.strip().lower() for name in reader.fieldnames or ()]
            missing = [name for name in _MANIFEST_COLUMNS if name not in columns]
            if missing:
                raise DataError(
                    f"{manifest}: missing column {', '.join(missing)}; its header has "
                    f"{', '.join(columns) or 'no columns'}; expected {CORPORA['manifest'].layout_hint}"
                )
            reader.fieldnames = columns
            rows = [(reader.line_num, row) for row in reader]
    except UnicodeDecodeError as exc:
        raise DataError(f"{manifest}: not a UTF-8 text CSV ({exc.reason} at byte {exc.start})") from exc
    except OSError as exc:
        raise DataError(f"{manifest}: cannot read file ({exc.strerror or exc})") from exc
    if not rows:
        raise DataError(f"{manifest}: lists no audio files; expected {CORPORA['manifest'].layout_hint}")
    utterances = []
    for line_no, row in rows:
        where, label = _cell(row, "path"), _cell(row, "label")
        if not where or not label:
            problems.report(f"{manifest}:{line_no}: empty {'path' if not where else 'label'} cell")
            continue
        path = Path(os.path.abspath(manifest.parent / where))
        if not path.is_file():
            problems.report(f"{manifest}:{line_no}: audio file {path} does not exist")
            continue
        utterances.append(Utterance(path, canonical_label(label) or label.lower(), _cell(row, "speaker")))
    return sorted(utterances, key=lambda utterance: utterance.path)


def _download(source: str) -> str:
    return f"download it from {source}, unpack it and pass data.root=<dir>"


CORPORA: dict[str, Corpus] = {
    "emodb": Corpus(
        "emodb",
        parse_emodb,
        _download("http://emodb.bilderbar.info/download/ (download.zip)"),
        "<root>/wav/03a01Fa.wav",
    ),
    "savee": Corpus(
        "savee",
        parse_savee,
        _download("http://kahlan.eps.surrey.ac.uk/savee/ (registration required)"),
        "<root>/AudioData/DC/a01.wav or <root>/DC_a01.wav",
    ),
    "tess": Corpus(
        "tess",
        parse_tess,
        _download("https://tspace.library.utoronto.ca/handle/1807/24487"),
        "<root>/OAF_angry/OAF_back_angry.wav",
    ),
    "ravdess": Corpus(
        "ravdess",
        parse_ravdess,
        _download("https://zenodo.org/records/1188976 (Audio_Speech_Actors_01-24.zip)"),
        "<root>/Actor_01/03-01-05-01-01-01-01.wav",
    ),
    "manifest": Corpus(
        "manifest",
        parse_manifest,
        "write a CSV listing your audio files and pass data.manifest=<file>",
        "CSV header path,label[,speaker], one row per audio file, relative paths from the CSV's folder",
    ),
}


def load_corpus(
    name: str,
    root: str | Path | None = None,
    manifest: str | Path | None = None,
    problems: Problems | None = None,
) -> list[Utterance]:
    """The utterances of corpus ``name``; ``manifest`` is the source for "manifest", ``root`` for the rest.

    A corpus that is absent always raises, whatever ``on_error`` says: skipping it would
    leave nothing to train on. For the same reason a corpus whose every file was skipped
    raises too, rather than handing an empty list to the splitter.
    """
    corpus = CORPORA.get(name)
    if corpus is None:
        raise DataError(f"data.corpus={name!r} is not one of {', '.join(CORPORA)}")
    source = manifest if name == "manifest" else root
    if source is None:
        raise _not_found(corpus, None)
    source = Path(source).expanduser()
    problems = Problems() if problems is None else problems
    utterances = corpus.parse(source, problems)
    if not utterances:
        raise DataError(f"{source}: no usable {corpus.name.upper()} utterances left after skipping the problems logged")
    return utterances
