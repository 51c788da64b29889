"""`log`: the trainer's progress lines on stdout (its only output besides Keras' own)."""


def log(message: str) -> None:
    """Print `[ccpdml] message`, flushed (so the line shows at once in logs and pipes)."""
    print(f"[ccpdml] {message}", flush=True)
