"""Cache helpers."""

import pytest

from optimum_dynexec.utils import building


def test_building_replaces_the_folder_only_on_success(tmp_path):
    out = tmp_path / "model"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with building(out) as tmp:
            (tmp / "half.txt").write_text("half")
            raise RuntimeError("interrupted")
    assert (out / "old.txt").exists() and not (out / "half.txt").exists()
    with building(out) as tmp:
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == ["new.txt"]
    assert not tmp.exists()
