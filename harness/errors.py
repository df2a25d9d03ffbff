"""User-facing errors: the CLI prints their message as one line, with no traceback."""


class HarnessError(Exception):
    """A problem the user can fix (bad path, bad file, mismatched model/profile...)."""


class TargetUnavailable(HarnessError):
    """A target cannot run on this machine (runtime not installed, no GPU...)."""
