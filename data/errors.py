"""Errors a user can act on.

Every error raised for bad input names the file, field or record at fault. The
`detseg` command prints these as one line (no traceback) and exits non-zero.
"""

from __future__ import annotations


class DatasetError(ValueError):
    """A dataset file or record is malformed; the message names which and where."""


class OptionError(DatasetError):
    """An error whose remedy is an option, named in the caller's own terms.

    The message is a template with `{name}` placeholders for option names: in Python
    they read `overwrite=True` / `num_images` (what `str()` gives), on the command line
    `--overwrite` / `--num-images` (what `for_command_line()` gives). `options` maps
    each placeholder to its Python spelling.

        OptionError("out: not empty; pass {overwrite} to replace it", overwrite="overwrite=True")
    """

    def __init__(self, template: str, **options: str):
        self.template = template
        self.options = options
        super().__init__(self._fill({name: python for name, python in options.items()}))

    def for_command_line(self) -> str:
        """The message with each option spelt as its flag (`clip_boxes` -> `--clip-boxes`)."""
        return self._fill({name: "--" + name.replace("_", "-") for name in self.options})

    def _fill(self, spellings: dict[str, str]) -> str:
        # plain replacement, not str.format: paths in the message may hold braces
        text = self.template
        for name, spelling in spellings.items():
            text = text.replace("{" + name + "}", spelling)
        return text
