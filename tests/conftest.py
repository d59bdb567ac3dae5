"""Shared test setup: CPU only, quiet logs, 8 host devices for sharding tests."""

import os

# Set before jax is imported anywhere: sharding tests want several CPU devices; the rest run on
# device 0 and do not notice.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
