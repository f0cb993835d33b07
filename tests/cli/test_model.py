"""`cm3jax model size`: parameter count and bytes per device of a paper config on a mesh."""

from pathlib import Path

import pytest

from cm3jax import cli
from cm3jax.cli.model import mesh_sizes
from cm3jax.errors import UserError

ROOT = Path(__file__).resolve().parents[2]


def test_mesh_sizes_name_the_axes_and_refuse_anything_else():
    assert mesh_sizes("2,4,1") == {"data": 2, "fsdp": 4, "tensor": 1}
    for bad in ("2,4", "a,b,c", "1,0,1", "1,2,3,4"):
        with pytest.raises(UserError, match="three positive sizes"):
            mesh_sizes(bad)


def test_size_prints_the_count_against_the_paper_and_bytes_per_device(capsys):
    assert cli.main(["model", "size", "--config", f"{ROOT}/experiments/cm3leon_350m.py", "--mesh", "1,8,1"]) == 0
    out = capsys.readouterr().out
    assert "vs the paper's nominal 0.35 B" in out and "(8 devices)" in out
    assert out.count("GiB per device") == 3
