"""Keep TensorFlow's start-up and runtime chatter off a command's stderr.

TensorFlow writes from C++ straight to file descriptor 2 (absl lines such as
`I0000 00:00:... cudart_stub.cc:31] Could not find cuda drivers`, `failed call to cuInit`,
`WARNING: All log messages before absl::InitializeLog() ...`, the oneDNN and CPU
instruction notices), some before any Python setting can reach it. So `quiet_tensorflow`
does two things before TensorFlow is imported:

- Python side: TF's C++ log level (`TF_CPP_MIN_LOG_LEVEL`, unless the user set it), the
  `tensorflow` and `absl` loggers at ERROR (retracing warnings), and a warnings filter for
  Keras' "`shuffle=True` was passed, but will be ignored" (tf.data input is shuffled by
  the pipeline itself).
- Descriptor side: fd 2 becomes a pipe; a thread forwards every line to the real stderr
  except the lines that match `NOISE`. detseg's own messages pass through as written.

`TF_ENABLE_ONEDNN_OPTS` is never touched (it changes numerics); only its notice is dropped.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
import warnings

NOISE = re.compile(
    r"^(?:"
    r"[IWEF]\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ \S+:\d+\] "  # absl: I0000 00:00:1796592575.37  4899 file.cc:31]
    r"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWEF] \S+:\d+\] "  # TF's own: 2025-01-01 12:00:00.0: I tensorflow/...]
    r"|WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|To enable the following instructions: .* rebuild TensorFlow with the appropriate compiler flags"
    r"|WARNING:tensorflow:"
    r")")
KERAS_SHUFFLE_WARNING = r"`shuffle=True` was passed, but will be ignored"


def quiet_tensorflow() -> "StderrFilter":
    """Settings that must precede `import tensorflow`, and the started stderr filter."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    warnings.filterwarnings("ignore", message=KERAS_SHUFFLE_WARNING, category=UserWarning)
    for name in ("tensorflow", "absl"):
        logging.getLogger(name).setLevel(logging.ERROR)
    stderr_filter = StderrFilter(NOISE)
    stderr_filter.start()
    return stderr_filter


class StderrFilter:
    """Forwards what is written to fd 2, line by line, minus lines matching `pattern`.

    `start()` swaps fd 2 for a pipe; `stop()` puts the real stderr back and waits for the
    forwarding thread to drain the pipe. If anything goes wrong in the thread it forwards
    raw bytes instead: a filter must never block or eat a real error message.
    """

    def __init__(self, pattern: re.Pattern):
        self.pattern = pattern
        self._original_fd: int | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        try:
            sys.stderr.flush()
            read_fd, write_fd = os.pipe()
            self._original_fd = os.dup(2)
            os.dup2(write_fd, 2)
            os.close(write_fd)
        except (OSError, ValueError, AttributeError):  # no fd 2 (embedded interpreter, closed stderr)
            self._original_fd = None
            return
        self._thread = threading.Thread(target=self._forward, args=(read_fd,), name="detseg-stderr-filter",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._original_fd is None:
            return
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(self._original_fd, 2)  # closes our pipe's write end: the thread sees end of file
        if self._thread is not None:
            self._thread.join(timeout=5)  # a child still holding the pipe must not hang the exit
            if self._thread.is_alive():
                return  # it still writes to the saved descriptor: leave that open
        os.close(self._original_fd)
        self._original_fd = None

    def _forward(self, read_fd: int) -> None:
        pending = b""
        with os.fdopen(read_fd, "rb", buffering=0) as pipe:
            while True:
                chunk = pipe.read(65536)
                if not chunk:
                    break
                pending = self._write_lines(pending + chunk)
            if pending:
                self._write(pending, check=True)

    def _write_lines(self, data: bytes) -> bytes:
        """Forwards the complete lines of `data`; returns the unfinished rest (kept unless it
        cannot be noise: a progress line written without a newline shows at once)."""
        *lines, rest = data.split(b"\n")
        for line in lines:
            self._write(line + b"\n", check=True)
        if rest and not self._may_be_noise(rest):
            self._write(rest, check=False)
            return b""
        return rest

    def _may_be_noise(self, partial: bytes) -> bool:
        text = partial.decode("utf-8", "replace")
        return bool(self.pattern.match(text)) or bool(re.match(r"^(?:[IWEF]\d|\d{4}-|WARNING|To enable)", text))

    def _write(self, data: bytes, check: bool) -> None:
        try:
            if check and self.pattern.match(data.decode("utf-8", "replace")):
                return
        except Exception:  # noqa: BLE001 - never lose a line to a filter bug
            pass
        try:
            os.write(self._original_fd, data)
        except OSError:  # the reader of our stderr went away: keep draining the pipe
            pass
