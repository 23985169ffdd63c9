"""Corpus parsers read labels and speakers from names, in each corpus' real layout.

The fake corpora are empty files: a parser that tried to decode audio would fail here.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest

from ser.data.corpora import (
    CANONICAL_LABELS,
    CORPORA,
    Utterance,
    canonical_label,
    class_order,
    load_corpus,
    parse_emodb,
    parse_manifest,
    parse_ravdess,
    parse_savee,
    parse_tess,
)
from ser.data.problems import Problems
from ser.errors import DataError


def touch(root: Path, *names: str) -> Path:
    """Creates empty files below ``root`` and returns ``root``."""
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    return root


def labelled(utterances: list[Utterance], root: Path) -> list[tuple[str, str, str]]:
    """(relative path, label, speaker) rows, readable in an assertion."""
    return [(u.path.relative_to(root).as_posix(), u.label, u.speaker) for u in utterances]


def write_manifest(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("alias", "label"),
    [
        ("angry", "anger"),
        ("Anger", "anger"),
        ("bored", "boredom"),
        ("disgusted", "disgust"),
        ("fearful", "fear"),
        ("FEAR", "fear"),
        ("happy", "happiness"),
        ("joy", "happiness"),
        ("neutral", "neutral"),
        ("sad", "sadness"),
        ("ps", "surprise"),
        ("surprised", "surprise"),
        ("Pleasant surprise", "surprise"),
        ("pleasant-surprised", "surprise"),
        (" pleasant_surprised ", "surprise"),
    ],
)
def test_canonical_label_maps_each_alias(alias: str, label: str) -> None:
    assert canonical_label(alias) == label


def test_canonical_label_is_none_for_an_unknown_emotion() -> None:
    assert canonical_label("bliss") is None


def test_every_canonical_label_maps_to_itself() -> None:
    assert [canonical_label(label) for label in CANONICAL_LABELS] == list(CANONICAL_LABELS)


def test_class_order_puts_canonical_labels_in_fixed_order_then_unknown_ones_sorted() -> None:
    labels = ["sadness", "zen", "anger", "sadness", "bliss", "fear", "anger"]
    assert class_order(labels) == ["anger", "fear", "sadness", "bliss", "zen"]


def test_emodb_reads_label_and_speaker_from_the_name(tmp_path: Path) -> None:
    touch(tmp_path, "wav/03a01Fa.wav", "wav/08b10Wc.wav", "wav/16a05Ld.wav", "wav/10a02Eb.wav")
    touch(tmp_path, "wav/11b03Ab.wav", "wav/12a04Tc.wav", "wav/13b01Na.wav")
    assert labelled(parse_emodb(tmp_path, Problems()), tmp_path) == [
        ("wav/03a01Fa.wav", "happiness", "03"),
        ("wav/08b10Wc.wav", "anger", "08"),
        ("wav/10a02Eb.wav", "disgust", "10"),
        ("wav/11b03Ab.wav", "fear", "11"),
        ("wav/12a04Tc.wav", "sadness", "12"),
        ("wav/13b01Na.wav", "neutral", "13"),
        ("wav/16a05Ld.wav", "boredom", "16"),
    ]


def test_emodb_accepts_clips_directly_under_root_and_an_upper_case_extension(tmp_path: Path) -> None:
    touch(tmp_path, "03a01Fa.WAV", "09a01Wa.wav")
    assert labelled(parse_emodb(tmp_path, Problems()), tmp_path) == [
        ("03a01Fa.WAV", "happiness", "03"),
        ("09a01Wa.wav", "anger", "09"),
    ]


def test_parsers_ignore_other_files_and_macos_resource_forks(tmp_path: Path) -> None:
    touch(tmp_path, "wav/03a01Fa.wav", "wav/._03a01Fa.wav", "lablaut/03a01Fa.lab", "erkennung.txt")
    problems = Problems("skip")
    assert labelled(parse_emodb(tmp_path, problems), tmp_path) == [("wav/03a01Fa.wav", "happiness", "03")]
    assert len(problems) == 0


def test_paths_are_absolute_and_sorted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    touch(tmp_path, "wav/16a01Wa.wav", "wav/03b02Na.wav", "wav/09a01Fa.wav")
    monkeypatch.chdir(tmp_path)
    paths = [u.path for u in parse_emodb(Path("."), Problems())]
    assert all(path.is_absolute() for path in paths)
    assert [path.name for path in paths] == ["03b02Na.wav", "09a01Fa.wav", "16a01Wa.wav"]


def test_nonconforming_emodb_name_raises_under_raise(tmp_path: Path) -> None:
    touch(tmp_path, "wav/03a01Fa.wav", "wav/03a01Xa.wav")
    with pytest.raises(DataError, match=r"03a01Xa\.wav: name does not match the EMODB convention .*03a01Fa\.wav"):
        parse_emodb(tmp_path, Problems("raise"))


def test_nonconforming_emodb_name_is_skipped_and_counted_under_skip(tmp_path: Path) -> None:
    touch(tmp_path, "wav/03a01Fa.wav", "wav/recording.wav")
    problems = Problems("skip")
    assert labelled(parse_emodb(tmp_path, problems), tmp_path) == [("wav/03a01Fa.wav", "happiness", "03")]
    assert len(problems) == 1
    assert "recording.wav: name does not match the EMODB convention" in problems.messages[0]


def test_savee_original_layout_takes_speaker_from_folder(tmp_path: Path) -> None:
    touch(tmp_path, "AudioData/DC/a01.wav", "AudioData/JE/sa03.wav", "AudioData/JK/su15.wav")
    touch(tmp_path, "AudioData/KL/n30.wav", "AudioData/DC/d02.wav", "AudioData/JE/f04.wav", "AudioData/JK/h05.wav")
    assert labelled(parse_savee(tmp_path, Problems()), tmp_path) == [
        ("AudioData/DC/a01.wav", "anger", "DC"),
        ("AudioData/DC/d02.wav", "disgust", "DC"),
        ("AudioData/JE/f04.wav", "fear", "JE"),
        ("AudioData/JE/sa03.wav", "sadness", "JE"),
        ("AudioData/JK/h05.wav", "happiness", "JK"),
        ("AudioData/JK/su15.wav", "surprise", "JK"),
        ("AudioData/KL/n30.wav", "neutral", "KL"),
    ]


def test_savee_flat_layout_takes_speaker_from_name(tmp_path: Path) -> None:
    touch(tmp_path, "ALL/DC_a01.wav", "ALL/JE_sa01.wav", "ALL/JK_su02.wav", "ALL/KL_n10.wav")
    assert labelled(parse_savee(tmp_path, Problems()), tmp_path) == [
        ("ALL/DC_a01.wav", "anger", "DC"),
        ("ALL/JE_sa01.wav", "sadness", "JE"),
        ("ALL/JK_su02.wav", "surprise", "JK"),
        ("ALL/KL_n10.wav", "neutral", "KL"),
    ]


def test_savee_name_outside_a_speaker_folder_is_reported(tmp_path: Path) -> None:
    touch(tmp_path, "AudioData/DC/a01.wav", "AudioData/XX/a01.wav")
    problems = Problems("skip")
    assert labelled(parse_savee(tmp_path, problems), tmp_path) == [("AudioData/DC/a01.wav", "anger", "DC")]
    assert len(problems) == 1
    assert "XX/a01.wav: name does not match the SAVEE convention" in problems.messages[0]


def test_tess_reads_emotion_from_the_last_token_in_any_case(tmp_path: Path) -> None:
    touch(
        tmp_path,
        "OAF_angry/OAF_back_angry.wav",
        "OAF_Fear/OAF_bath_Fear.wav",
        "OAF_Pleasant_surprise/OAF_bean_ps.wav",
        "YAF_pleasant_surprised/YAF_back_ps.wav",
        "YAF_neutral/YAF_youth_neutral.wav",
        "YAF_sad/YAF_date_sad.wav",
    )
    assert labelled(parse_tess(tmp_path, Problems()), tmp_path) == [
        ("OAF_Fear/OAF_bath_Fear.wav", "fear", "OAF"),
        ("OAF_Pleasant_surprise/OAF_bean_ps.wav", "surprise", "OAF"),
        ("OAF_angry/OAF_back_angry.wav", "anger", "OAF"),
        ("YAF_neutral/YAF_youth_neutral.wav", "neutral", "YAF"),
        ("YAF_pleasant_surprised/YAF_back_ps.wav", "surprise", "YAF"),
        ("YAF_sad/YAF_date_sad.wav", "sadness", "YAF"),
    ]


def test_tess_finds_clips_below_the_kaggle_folder(tmp_path: Path) -> None:
    touch(tmp_path, "TESS Toronto emotional speech set data/OAF_disgust/OAF_base_disgust.wav")
    (utterance,) = parse_tess(tmp_path, Problems())
    assert (utterance.label, utterance.speaker) == ("disgust", "OAF")


def test_tess_falls_back_to_the_emotion_folder_for_an_odd_name_without_reporting(tmp_path: Path) -> None:
    touch(tmp_path, "YAF_pleasant_surprised/YAF_back_.wav", "OAF_happy/back happy take2.wav")
    problems = Problems("raise")
    assert labelled(parse_tess(tmp_path, problems), tmp_path) == [
        ("OAF_happy/back happy take2.wav", "happiness", "OAF"),
        ("YAF_pleasant_surprised/YAF_back_.wav", "surprise", "YAF"),
    ]
    assert len(problems) == 0


def test_tess_name_with_no_emotion_in_name_or_folder_is_reported(tmp_path: Path) -> None:
    touch(tmp_path, "OAF_angry/OAF_back_angry.wav", "extras/OAF_back_take2.wav")
    with pytest.raises(DataError, match=r"OAF_back_take2\.wav: name does not match the TESS convention"):
        parse_tess(tmp_path, Problems())


def test_manifest_resolves_relative_paths_against_its_folder_and_reads_speakers(tmp_path: Path) -> None:
    touch(tmp_path, "audio/one.wav", "audio/two.flac")
    manifest = write_manifest(tmp_path / "lists/train.csv", "path,label,speaker\n../audio/two.flac,Happy,s2\n")
    with manifest.open("a") as handle:
        handle.write(f"{tmp_path / 'audio/one.wav'},angry,s1\n")
    assert labelled(parse_manifest(manifest, Problems()), tmp_path) == [
        ("audio/one.wav", "anger", "s1"),
        ("audio/two.flac", "happiness", "s2"),
    ]


def test_manifest_without_speaker_column_leaves_speaker_empty(tmp_path: Path) -> None:
    touch(tmp_path, "a.wav")
    manifest = write_manifest(tmp_path / "m.csv", "label,path\nsad,a.wav\n")
    assert labelled(parse_manifest(manifest, Problems()), tmp_path) == [("a.wav", "sadness", "")]


def test_manifest_keeps_an_unknown_label_stripped_and_lower_cased(tmp_path: Path) -> None:
    touch(tmp_path, "a.wav")
    manifest = write_manifest(tmp_path / "m.csv", "path,label\na.wav, Calm \n")
    assert [u.label for u in parse_manifest(manifest, Problems())] == ["calm"]


def test_manifest_missing_column_names_the_file_and_its_columns(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path / "m.csv", "file,emotion\na.wav,sad\n")
    with pytest.raises(DataError, match=r"m\.csv: missing column path, label; its header has file, emotion"):
        parse_manifest(manifest, Problems())


def test_manifest_empty_cells_and_missing_files_are_reported_with_line_numbers(tmp_path: Path) -> None:
    touch(tmp_path, "a.wav")
    manifest = write_manifest(tmp_path / "m.csv", "path,label\na.wav,sad\n,sad\na.wav,\ngone.wav,sad\n")
    problems = Problems("skip")
    assert labelled(parse_manifest(manifest, problems), tmp_path) == [("a.wav", "sadness", "")]
    assert problems.messages == [
        f"{manifest}:3: empty path cell",
        f"{manifest}:4: empty label cell",
        f"{manifest}:5: audio file {tmp_path / 'gone.wav'} does not exist",
    ]


def test_ravdess_reads_all_eight_emotions_and_the_actor_from_the_name(tmp_path: Path) -> None:
    names = [
        f"Actor_{actor}/03-01-{emotion:02d}-01-01-01-{actor}.wav"
        for emotion, actor in zip(range(1, 9), ["01", "02"] * 4)
    ]
    touch(tmp_path, *names)
    assert [(label, speaker) for _, label, speaker in labelled(parse_ravdess(tmp_path, Problems()), tmp_path)] == [
        ("neutral", "01"),
        ("happiness", "01"),
        ("anger", "01"),
        ("disgust", "01"),
        ("calm", "02"),
        ("sadness", "02"),
        ("fear", "02"),
        ("surprise", "02"),
    ]


def test_ravdess_reads_flac_copies_like_wav(tmp_path: Path) -> None:
    touch(tmp_path, "Actor_07/03-01-02-02-01-02-07.flac", "Actor_08/03-01-04-01-02-01-08.WAV")
    assert labelled(parse_ravdess(tmp_path, Problems()), tmp_path) == [
        ("Actor_07/03-01-02-02-01-02-07.flac", "calm", "07"),
        ("Actor_08/03-01-04-01-02-01-08.WAV", "sadness", "08"),
    ]


def test_ravdess_leaves_song_recordings_out_without_reporting_them(tmp_path: Path) -> None:
    touch(tmp_path, "Actor_01/03-01-05-01-01-01-01.wav", "Actor_01/03-02-05-01-01-01-01.wav")
    problems = Problems("raise")
    assert labelled(parse_ravdess(tmp_path, problems), tmp_path) == [
        ("Actor_01/03-01-05-01-01-01-01.wav", "anger", "01")
    ]
    assert problems.messages == []


@pytest.mark.parametrize(
    "name", ["01-01-05-01-01-01-01.wav", "03-01-09-01-01-01-01.wav", "03-01-05-01-01-01.wav", "take1.flac"]
)
def test_ravdess_name_off_the_convention_is_a_reported_problem(tmp_path: Path, name: str) -> None:
    touch(tmp_path, "Actor_01/03-01-05-01-01-01-01.wav", f"Actor_01/{name}")
    problems = Problems("skip")
    assert len(parse_ravdess(tmp_path, problems)) == 1
    assert problems.messages == [
        f"{tmp_path / 'Actor_01' / name}: name does not match the RAVDESS convention "
        "Actor_<nn>/<modality>-<channel>-<emotion>-<intensity>-<statement>-<repetition>-<actor>.wav (or .flac), "
        "e.g. Actor_01/03-01-05-01-01-01-01.wav"
    ]


@pytest.mark.parametrize(
    ("name", "hint"),
    [
        ("emodb", "http://emodb.bilderbar.info/download/"),
        ("ravdess", "https://zenodo.org/records/1188976"),
        ("savee", "http://kahlan.eps.surrey.ac.uk/savee/ (registration required)"),
        ("tess", "https://tspace.library.utoronto.ca/handle/1807/24487"),
    ],
)
def test_missing_corpus_directory_names_the_path_and_where_to_download(tmp_path: Path, name: str, hint: str) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError) as error:
        load_corpus(name, root=missing, problems=Problems("skip"))
    message = str(error.value)
    assert f"{name.upper()} not found at {missing}" in message
    assert hint in message
    assert CORPORA[name].layout_hint in message
    assert "\n" not in message


def test_unset_root_says_where_to_download() -> None:
    with pytest.raises(DataError, match=r"EMODB location is not set: download it from .*data\.root=<dir>"):
        load_corpus("emodb")


def test_missing_manifest_names_the_file_and_the_expected_columns(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"not found at .*absent\.csv.*path,label\[,speaker\]"):
        load_corpus("manifest", manifest=tmp_path / "absent.csv")


def test_directory_without_audio_files_says_so_and_shows_the_layout(tmp_path: Path) -> None:
    touch(tmp_path, "readme.txt")
    with pytest.raises(
        DataError, match=rf"no audio files \(.*\.flac.*\.wav\) found under {tmp_path}; expected TESS layout .*OAF_angry"
    ):
        parse_tess(tmp_path, Problems())


def test_corpus_with_every_file_skipped_raises(tmp_path: Path) -> None:
    touch(tmp_path, "wav/junk.wav")
    with pytest.raises(DataError, match="no usable EMODB utterances left"):
        load_corpus("emodb", root=tmp_path, problems=Problems("skip"))


def test_unknown_corpus_name_lists_the_known_ones() -> None:
    with pytest.raises(DataError, match="'timit' is not one of emodb, savee, tess, ravdess, manifest"):
        load_corpus("timit", root=".")


def test_load_corpus_uses_the_manifest_for_the_manifest_corpus(tmp_path: Path) -> None:
    touch(tmp_path, "x.wav")
    manifest = write_manifest(tmp_path / "m.csv", "path,label,speaker\nx.wav,fear,p1\n")
    assert load_corpus("manifest", root=tmp_path / "ignored", manifest=manifest) == [
        Utterance(tmp_path / "x.wav", "fear", "p1")
    ]


@pytest.mark.skipif("SER_EMODB_ROOT" not in os.environ, reason="set SER_EMODB_ROOT to the real EMODB")
def test_real_emodb_has_the_published_counts() -> None:
    utterances = load_corpus("emodb", root=os.environ["SER_EMODB_ROOT"])
    assert len(utterances) == 535
    assert sorted({u.speaker for u in utterances}) == ["03", "08", "09", "10", "11", "12", "13", "14", "15", "16"]
    assert Counter(u.label for u in utterances) == {
        "anger": 127,
        "boredom": 81,
        "neutral": 79,
        "happiness": 71,
        "fear": 69,
        "sadness": 62,
        "disgust": 46,
    }


@pytest.mark.skipif("SER_RAVDESS_ROOT" not in os.environ, reason="set SER_RAVDESS_ROOT to the real RAVDESS")
def test_real_ravdess_has_the_published_counts() -> None:
    utterances = load_corpus("ravdess", root=os.environ["SER_RAVDESS_ROOT"])
    assert len(utterances) == 1440
    assert sorted({u.speaker for u in utterances}) == [f"{actor:02d}" for actor in range(1, 25)]
    assert Counter(u.label for u in utterances) == {
        "neutral": 96,
        **{label: 192 for label in ("calm", "happiness", "sadness", "anger", "fear", "disgust", "surprise")},
    }
