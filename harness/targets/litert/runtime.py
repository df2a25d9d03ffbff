"""The LiteRT (TFLite) interpreter module this machine has, and external delegates.

ai-edge-litert (`ai_edge_litert.interpreter`) is LiteRT's own package; `tflite_runtime.interpreter`
is the older name of the same interpreter (still what many Arm boards ship). Both expose
Interpreter(model_path, num_threads, experimental_delegates, experimental_op_resolver_type) and
load_delegate(library, options).
"""

from __future__ import annotations

import ctypes
import importlib
import importlib.metadata
from pathlib import Path

from harness.core.errors import HarnessError, TargetUnavailable, first_line

#: (python module, distribution) in order of preference
MODULES = (("ai_edge_litert.interpreter", "ai-edge-litert"), ("tflite_runtime.interpreter", "tflite-runtime"))
INSTALL_HINT = "neither ai-edge-litert nor tflite-runtime is installed: pip install 'harness[litert]'"


def interpreter_module():
    """(the interpreter module, 'distribution version') of the first one that imports."""
    for module_name, distribution in MODULES:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        try:
            version = importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            version = "unknown version"
        return module, f"{distribution} {version}"
    raise TargetUnavailable(INSTALL_HINT)


def parse_delegate_options(text: str | None) -> dict[str, str]:
    """'k=v;k=v' (the external delegate's own option names) -> {k: v}; one line for a malformed pair."""
    options: dict[str, str] = {}
    for pair in (text or "").split(";"):
        if not pair.strip():
            continue
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise HarnessError(f"-o delegate_options={text!r}: {pair.strip()!r} is not KEY=VALUE "
                               "(expected 'k=v;k=v', the delegate's own option names)")
        options[key.strip()] = value.strip()
    return options


def load_external_delegate(module, library: str, options: dict[str, str]):
    """load_delegate(library, options), with one line for a missing file or a library that is no delegate."""
    path = Path(library).expanduser()
    if not path.is_file():
        raise HarnessError(f"-o delegate={library}: file not found (expected the delegate's shared library, "
                           "e.g. /usr/lib/libvx_delegate.so)")
    try:  # an external delegate exports TFLite's plugin entry points (else load_delegate fails noisily)
        library_handle = ctypes.CDLL(str(path))
    except OSError as exc:
        raise HarnessError(f"-o delegate={library}: not a loadable shared library ({first_line(exc, 200)})") from None
    if not hasattr(library_handle, "tflite_plugin_create_delegate"):
        raise HarnessError(f"-o delegate={library}: LiteRT cannot load it as an external delegate (it does not "
                           "export tflite_plugin_create_delegate)")
    try:
        return module.load_delegate(str(path), options or None)
    except (ValueError, OSError, RuntimeError, AttributeError) as exc:
        raise HarnessError(f"-o delegate={library}: LiteRT cannot load it as an external delegate "
                           f"({first_line(exc, 200)})") from None
