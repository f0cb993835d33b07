"""A second run in a directory is refused naming the first; the lock goes with the run, crash included."""

import os
import signal
import subprocess
import sys

import pytest

from cm3jax.errors import UserError
from cm3jax.workdir_lock import lock_path, workdir_lock

HOLD = ("import sys, time; from cm3jax.workdir_lock import workdir_lock\n"
        "with workdir_lock(sys.argv[1], 'cm3jax train --workdir w'):\n"
        "    print('held', flush=True); time.sleep(60)\n")


def test_a_second_run_is_refused_and_the_first_one_s_end_frees_the_directory(tmp_path):
    with workdir_lock(str(tmp_path / "run"), "cm3jax demo"):
        with pytest.raises(UserError, match=rf"in use by another run \(`cm3jax demo`, pid {os.getpid()}, since "):
            with workdir_lock(str(tmp_path / "run"), "cm3jax demo"):
                pass
        with workdir_lock(str(tmp_path / "run"), "cm3jax train", process=1):  # another host of the same job
            pass
    with workdir_lock(str(tmp_path / "run"), "cm3jax demo"):
        pass


def test_a_crashed_run_leaves_the_directory_free(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(UserError, match=rf"`cm3jax train --workdir w`, pid {holder.pid}"):
            with workdir_lock(str(tmp_path), "cm3jax demo"):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert os.path.exists(lock_path(str(tmp_path)))  # the file stays; the kernel's lock went with the process
    with workdir_lock(str(tmp_path), "cm3jax demo"):
        pass
