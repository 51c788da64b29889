"""`tf.distribute` strategy from the `distribute:` config section."""

from __future__ import annotations

import tensorflow as tf

from ccpdml.config.schema import STRATEGIES


def make_strategy(distribute) -> tf.distribute.Strategy:
    """Build the strategy named by `distribute.strategy`.

    - `default`: the current (no-op) strategy: one device, whatever TensorFlow picks.
    - `one_device`: `OneDeviceStrategy(devices[0] or "/cpu:0")`.
    - `mirrored`: `MirroredStrategy(devices)`: every local GPU (or the given devices). Replicas
      on CPUs (logical CPU devices, hosts without a GPU) reduce with `ReductionToOneDevice`:
      TensorFlow's default collective implementation clashes with the collective instances of
      another MirroredStrategy created earlier in the same process (e.g. two runs in a notebook).
    - `multi_worker`: `MultiWorkerMirroredStrategy`, cluster from the `TF_CONFIG` environment variable.
    - `tpu`: `TPUStrategy` on the TPU named by `distribute.tpu` (empty = the local / Colab TPU).
    """
    name = distribute.strategy
    devices = list(distribute.devices) if distribute.devices else None
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy(devices[0] if devices else "/cpu:0")
    if name == "mirrored":
        on_cpu = (
            all("cpu" in d.lower() for d in devices)
            if devices
            else not tf.config.list_logical_devices("GPU")
        )
        ops = tf.distribute.ReductionToOneDevice() if on_cpu else None
        return tf.distribute.MirroredStrategy(devices=devices, cross_device_ops=ops)
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=distribute.tpu or "")
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    raise ValueError(f"distribute.strategy must be one of {', '.join(STRATEGIES)}; got {name!r}")
