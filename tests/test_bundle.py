"""Model bundles: save -> load gives the same network; mismatched parts give plain errors."""

import io
import json
import shutil
import zipfile

import numpy as np
import pytest

from musicgen.bundle import BundleError, bundle_to_zip, load_bundle, read_info, zip_to_bundle
from musicgen.model import ModelConfig
from musicgen.tokens import TokenConfig, Vocabulary

VOCABULARY = Vocabulary()


@pytest.fixture
def copy(run_dir, tmp_path):
    return shutil.copytree(run_dir, tmp_path / "copy")


def logits(bundle, ids=(1, 70, 120, 3, 90)):
    return bundle.model(np.array([ids])).numpy()


def test_loaded_bundle_gives_the_same_logits_as_the_trained_weights(run_dir, copy):
    first, second = load_bundle(run_dir), load_bundle(copy)
    np.testing.assert_allclose(logits(first), logits(second), rtol=1e-6)
    assert first.info == second.info and first.history == second.history


def test_zip_round_trip_keeps_the_model_and_leaves_the_backup_out(run_dir, tmp_path):
    data = bundle_to_zip(run_dir)
    assert "backup" not in " ".join(zipfile.ZipFile(io.BytesIO(data)).namelist())
    np.testing.assert_allclose(logits(zip_to_bundle(data, tmp_path / "up")), logits(load_bundle(run_dir)), rtol=1e-6)


def test_vocabulary_that_does_not_match_the_weights_is_a_plain_error(copy):
    smaller = Vocabulary(TokenConfig(max_shift_steps=8))
    (copy / "vocabulary.json").write_text(json.dumps(smaller.to_dict()))
    config = json.loads((copy / "config.json").read_text())
    config["model"]["vocabulary_size"] = len(smaller)
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(BundleError, match="weights were trained with .* tokens but its vocabulary has"):
        load_bundle(copy)


def test_settings_that_disagree_with_the_vocabulary_are_a_plain_error(copy):
    config = json.loads((copy / "config.json").read_text())
    config["model"]["vocabulary_size"] += 1
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(BundleError, match="come from different models"):
        read_info(copy)


def test_weights_for_another_architecture_are_a_plain_error(copy):
    config = json.loads((copy / "config.json").read_text())
    config["model"]["units"] = 32
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(BundleError, match="weights do not fit"):
        load_bundle(copy)


@pytest.mark.parametrize("name", ["config.json", "vocabulary.json", "model.weights.h5"])
def test_missing_or_damaged_parts_are_plain_errors(copy, name):
    (copy / name).write_bytes(b"\x00garbage")
    with pytest.raises(BundleError):
        load_bundle(copy)
    (copy / name).unlink()
    with pytest.raises(BundleError):
        load_bundle(copy)


def test_hostile_zip_files_are_refused_and_never_escape_their_folder(run_dir, tmp_path):
    with pytest.raises(BundleError, match="not a musicgen model file"):
        zip_to_bundle(b"PK not really", tmp_path / "a")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("../escaped.txt", "x")
        archive.writestr("/etc/evil", "x")
        for name in ("config.json", "vocabulary.json", "corpus.json"):
            archive.write(run_dir / name, name)
    with pytest.raises(BundleError, match="model.weights.h5 is missing"):
        zip_to_bundle(buffer.getvalue(), tmp_path / "b" / "inner")
    assert not (tmp_path / "b" / "escaped.txt").exists() and not (tmp_path / "escaped.txt").exists()


def test_unknown_model_settings_are_refused():
    with pytest.raises(ValueError, match="exactly the fields"):
        ModelConfig.from_dict({"units": 4, "evil": "__import__('os')"})
