import os

import pytest

from tests.chameleon.hf_reference import save_reference


@pytest.fixture(scope="session")
def hf_checkpoint(tmp_path_factory):
    """A saved tiny Chameleon (grouped-query attention, 2 of 4 heads) and its reference model."""
    return save_reference(str(tmp_path_factory.mktemp("hf") / "chameleon"), num_key_value_heads=2)


@pytest.fixture(scope="session")
def imported(hf_checkpoint, tmp_path_factory):
    from cm3jax.chameleon.convert import import_chameleon
    out = str(tmp_path_factory.mktemp("imported") / "run")
    import_chameleon(hf_checkpoint[0], out, progress=False)
    return out


@pytest.fixture(scope="session")
def trained(imported):
    from cm3jax.sampling.inference import TrainedDecoder
    return TrainedDecoder.load(imported)


def files_in(path):
    return sorted(os.listdir(path)) if os.path.isdir(path) else []
