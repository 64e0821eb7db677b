"""musicgen.styles: the built-in styles are the trained models that styles.json names."""

import json
import shutil

import pytest

from musicgen.styles import built_in_styles, find_style


def test_the_bach_chorales_are_a_built_in_style_with_their_model_and_music():
    bach = find_style("bach")
    assert bach.title == "Bach chorales" and (bach.model / "model.weights.h5").is_file()
    assert len(list(bach.music.glob("*.mid"))) > 300
    assert [style.name for style in built_in_styles()][0] == "bach"


def test_a_style_without_a_trained_model_is_not_offered(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    styles_file = tmp_path / "checkpoints" / "styles.json"
    entries = {name: {"title": name.title(), "music": f"samples/{name}"} for name in ("trained", "untrained")}
    styles_file.write_text(json.dumps(entries))
    shutil.copytree(find_style("bach").model, tmp_path / "checkpoints" / "trained")
    assert [style.name for style in built_in_styles(styles_file)] == ["trained"]
    with pytest.raises(ValueError, match="there is no built-in style 'untrained'; the styles are: trained"):
        find_style("untrained", styles_file)
