"""tf.data / TFDS input pipelines for ccpdml: benchmarks, the offline default, folds, samplers."""
