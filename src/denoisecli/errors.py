"""The one exception type the CLI turns into a one-line message and exit code 1."""


class DenoiseError(Exception):
    """A problem the user can fix (bad path, bad file, bad option); its message is shown as is."""


def first_line(exc: BaseException) -> str:
    """A library's exception in the few words a one-line message has room for: its first line, or
    its type where it has no message (decoders and encoders of untrusted files raise many kinds)."""
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def no_such_path(path: object) -> DenoiseError:
    """One wording wherever an input is not there, which the CLI says before it imports torch."""
    return DenoiseError(f"{path}: no such file or folder")


def no_weights_file(path: object) -> DenoiseError:
    """One wording wherever a model file is not there, which the CLI says before it imports torch."""
    return DenoiseError(f"{path}: weights file not found")
