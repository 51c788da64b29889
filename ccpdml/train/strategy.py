"""`tf.distribute` strategy from the `distribute:` config section."""

from __future__ import annotations

import re

import tensorflow as tf

from ccpdml.config.schema import STRATEGIES
from ccpdml.distribute import join_cluster


def _split_cpu(devices) -> None:
    """Make the logical CPUs "/cpu:0".."/cpu:N" named in `devices` exist (hosts without a GPU).

    One physical CPU is split into N logical devices, which TensorFlow allows only before its
    runtime starts; `python -m ccpdml train` builds the strategy first, so a CPU-only machine can
    run `mirrored` on `devices: ["/cpu:0", "/cpu:1"]` (how the tests run it).
    """
    wanted = [int(m.group(1)) for d in devices if (m := re.search(r"cpu:(\d+)$", d.lower()))]
    if not wanted or max(wanted) == 0:
        return
    count = max(wanted) + 1
    cpu = tf.config.list_physical_devices("CPU")[0]
    configured = tf.config.get_logical_device_configuration(cpu)
    if configured is not None and len(configured) >= count:
        return
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)]
        )
    except RuntimeError:
        have = len(tf.config.list_logical_devices("CPU"))
        if have < count:
            raise ValueError(
                f"distribute.devices names {count} CPU devices but this process has {have}, and "
                "TensorFlow can only split the CPU into logical devices before it starts: build "
                "the strategy first (python -m ccpdml train does), or list fewer CPU devices"
            ) from None


def make_strategy(distribute) -> tf.distribute.Strategy:
    """Build the strategy named by `distribute.strategy`.

    - `default`: the current (no-op) strategy: one device, whatever TensorFlow picks.
    - `one_device`: `OneDeviceStrategy(devices[0] or "/cpu:0")`.
    - `mirrored`: `MirroredStrategy(devices)`: every local GPU (or the given devices). Replicas
      on CPUs (logical CPU devices, hosts without a GPU) reduce with `ReductionToOneDevice`:
      TensorFlow's default collective implementation clashes with the collective instances of
      another MirroredStrategy created earlier in the same process (e.g. two runs in a notebook).
      Listing several CPUs ("/cpu:0", "/cpu:1") splits the CPU into that many logical devices.
    - `multi_worker`: `MultiWorkerMirroredStrategy`, cluster from the `TF_CONFIG` environment
      variable; a worker exits with a message naming the missing workers when the others have not
      joined within `distribute.startup_timeout` seconds (`ccpdml.distribute.liveness`).
    - `tpu`: `TPUStrategy` on the TPU named by `distribute.tpu` (empty = the local / Colab TPU).
    """
    name = distribute.strategy
    devices = list(distribute.devices) if distribute.devices else None
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy(devices[0] if devices else "/cpu:0")
    if name == "mirrored":
        if devices:
            _split_cpu(devices)
        on_cpu = (
            all("cpu" in d.lower() for d in devices)
            if devices
            else not tf.config.list_logical_devices("GPU")
        )
        ops = tf.distribute.ReductionToOneDevice() if on_cpu else None
        return tf.distribute.MirroredStrategy(devices=devices, cross_device_ops=ops)
    if name == "multi_worker":
        return join_cluster(tf.distribute.MultiWorkerMirroredStrategy, distribute.startup_timeout)
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=distribute.tpu or "")
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    raise ValueError(f"distribute.strategy must be one of {', '.join(STRATEGIES)}; got {name!r}")
