"""Issue 16: a `.keras` file whose LocalNormalization config was damaged or hand-edited
fails with localnorm's message first (Keras would otherwise put it after a dump of the
whole model config), on every backend."""

from __future__ import annotations

import json
import zipfile

import pytest

keras = pytest.importorskip("keras")

from localnorm import LocalNormError  # noqa: E402
from localnorm.keras import LocalNormalization  # noqa: E402


def _saved(tmp_path, **changes):
    model = keras.Sequential([keras.Input((4, 4, 3)), LocalNormalization(num_groups=2,
                                                                         name="ln")])
    path = tmp_path / "good.keras"
    model.save(path)
    with zipfile.ZipFile(path) as z:
        files = {n: z.read(n) for n in z.namelist()}
    config = json.loads(files["config.json"])
    layer = next(lay for lay in config["config"]["layers"] if lay["config"].get("name") == "ln")
    layer["config"].update(changes)
    files["config.json"] = json.dumps(config).encode()
    bad = tmp_path / "bad.keras"
    with zipfile.ZipFile(bad, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return bad


@pytest.mark.parametrize("changes,named", [
    ({"num_groups": 0}, "num_groups=0"),
    ({"num_groups": -2}, "num_groups=-2"),
    ({"num_groups": "4"}, "num_groups='4'"),
    ({"num_groups": 2.5}, "num_groups=2.5"),
    ({"epsilon": 1e-50}, "epsilon=1e-50"),
    ({"epsilon": -1.0}, "epsilon=-1.0"),
    ({"partition": "zigzag"}, "partition='zigzag'"),
    ({"mode": "set", "group": 7}, "group=7"),
], ids=["k0", "k-neg", "k-str", "k-float", "eps-underflow", "eps-neg", "partition", "group"])
def test_bad_saved_config_reads_as_our_message_first(tmp_path, changes, named):
    with pytest.raises(LocalNormError) as info:
        keras.models.load_model(_saved(tmp_path, **changes))
    text = str(info.value)
    assert named in text and "Fix" in text
    assert "config=" not in text  # no dump of the model config before (or around) it
