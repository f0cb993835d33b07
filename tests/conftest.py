"""Test session setup: eight fake CPU devices, so sharded code runs on meshes here."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
