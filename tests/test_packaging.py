"""A built wheel runs the commands without the source tree: the recipe folders ship inside the
package, and pyproject's package list holds every package."""

import os
import subprocess
import sys
import tomllib

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Run from an empty directory with only the installed wheel on the path; every config the demo
# and the commands' defaults read must load.
CHECK = """
import os, sys
import cm3jax
from cm3jax.config import load_config
from cm3jax.demo import PROFILES, demo_configs
assert cm3jax.__file__.startswith(sys.argv[1]), cm3jax.__file__
for profile in PROFILES:
    configs = demo_configs("runs/demo", profile)
    assert configs["decoder"].data.text_tokenizer == "runs/demo/text.model"
for name in ("experiments/shapes_world.py:default", "experiments/cm3leon_7b.py", "tokenizers/vqgan_shapes.py:default",
             "retrieval/clip_shapes.py"):
    load_config(name)
print(sorted(os.listdir(".")), cm3jax.demo.__file__.startswith(sys.argv[1]))
"""


def test_the_package_list_names_every_package():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        setuptools = tomllib.load(f)["tool"]["setuptools"]
    on_disk = {os.path.relpath(d, ROOT).replace(os.sep, ".") for d, _, files in os.walk(os.path.join(ROOT, "cm3jax"))
               if "__init__.py" in files}
    mapped = set(setuptools["package-dir"])
    assert set(setuptools["packages"]) == on_disk | mapped
    assert {path for path in setuptools["package-dir"].values()} == {"experiments", "tokenizers", "retrieval"}


def _installs_and_loads_from_anywhere(source: str, tmp_path) -> None:
    """Builds a wheel of `source` (what pip takes: a folder, or git+URL), installs it on its own and
    loads every config the demo uses from an empty directory."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path / "wheel"), source], check=True, cwd=tmp_path)
    wheel = [str(tmp_path / "wheel" / name) for name in os.listdir(tmp_path / "wheel")]
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), *wheel],
                   check=True)
    (tmp_path / "elsewhere").mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}
    done = subprocess.run([sys.executable, "-c", CHECK, str(site)], cwd=tmp_path / "elsewhere", env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "[] True"


def test_a_built_wheel_loads_every_config_the_demo_uses_from_anywhere(tmp_path):
    _installs_and_loads_from_anywhere(ROOT, tmp_path)


def test_pip_install_from_the_git_repository_loads_every_config(tmp_path):
    """What a Colab user types, `pip install "cm3jax @ git+URL"`, with this checkout's own history as
    the URL: the committed files alone make a package that runs the demo's configs."""
    head = subprocess.run(["git", "-C", ROOT, "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode != 0:
        pytest.skip("the source tree is not a git checkout")
    _installs_and_loads_from_anywhere(f"git+file://{ROOT}@{head.stdout.strip()}", tmp_path)
