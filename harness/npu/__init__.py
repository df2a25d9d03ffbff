"""File-based NPU targets: Ascend `ais_bench`/`ais_infer` (.bin) and VastAI `vamp` (.npz).

The device run happens elsewhere; the harness owns both ends of it with the code in-process targets
use, so a difference in mAP is a difference of the device, not of the glue:

    tool.py            the contract of a file tool (FileTool): write inputs, read outputs, emulate
    ais.py / vamp.py   one module per tool, each ending in TOOL = FileTool(...)
    prepare.py         dataset -> input files in the tool's format + prep.json sidecar
    prep.py            prep.json as a typed dataclass; what the reading side shares
    decode_outputs.py  outputs -> the common decoder -> the common evaluator -> a results row
    files.py           tensor file I/O with checks that name the image and the file

The table below is the only list of tools: adding one is one new module plus one line here.
"""

from __future__ import annotations

from harness.core.errors import HarnessError
from harness.core.registry import Registry

FILE_TOOLS = Registry("file tool", {
    "ais": "harness.npu.ais:TOOL",
    "vamp": "harness.npu.vamp:TOOL",
})


def formats() -> list[str]:
    """Input file formats of the registered tools (`harness preprocess --format`)."""
    return [tool.input_format for _, tool in FILE_TOOLS.items()]


def tool_for_format(fmt: str):
    for _, tool in FILE_TOOLS.items():
        if tool.input_format == fmt:
            return tool
    raise HarnessError(f"--format {fmt!r}: expected one of {', '.join(formats())}")
