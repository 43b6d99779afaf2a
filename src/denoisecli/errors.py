"""The one exception type the CLI turns into a one-line message and exit code 1."""


class DenoiseError(Exception):
    """A problem the user can fix (bad path, bad file, bad option); its message is shown as is."""
