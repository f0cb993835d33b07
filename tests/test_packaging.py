"""A built wheel runs the commands without the source tree: the recipe folders ship inside the
package, and pyproject's package list holds every package."""

import os
import subprocess
import sys
import tomllib

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


def test_a_built_wheel_loads_every_config_the_demo_uses_from_anywhere(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path / "wheel"), ROOT], check=True, cwd=tmp_path)
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
