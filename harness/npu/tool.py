"""The contract of a file-based device tool (Ascend ais_bench, VastAI vamp, ...): what the harness
writes for it, how it reads what the tool wrote back, and how it emulates the tool on this machine.

Each tool module ends with one `TOOL = FileTool(...)`; harness.npu.FILE_TOOLS lists them. Nothing
else dispatches on a tool's name or file format.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DeviceTiming:
    """What a tool's own summary says about the device run (all optional but the source)."""

    source: Path
    time_covers: str = ""
    fps: float | None = None
    latency_ms_p50: float | None = None
    latency_ms_p90: float | None = None
    latency_ms_p99: float | None = None
    batchsize: int | None = None
    iterations: int | None = None
    device_model: str | None = None  # the model file the tool ran (from its recorded arguments)
    device: str | None = None  # what the tool's own files say ran it (e.g. "device id 0 (ais_bench --device 0)")
    emulated_by: str | None = None  # set when `harness emulate` wrote it
    note: str = ""
    #: harness.targets.modes' word for how the tool timed: "latency" for one batch at a time; "" when unknown
    mode: str = ""
    #: what made the outputs, where the tool's files say (`harness emulate` records all three):
    tool_version: str | None = None  # e.g. "onnxruntime 1.23.2" for an emulation
    model_sha256: str | None = None  # the model file that ran
    prep_sha256: str | None = None  # the prep.json whose inputs it ran (decode refuses another one)


@dataclass(frozen=True)
class FileTool:
    name: str  # `harness emulate --runner NAME`
    device: str  # the row's target, e.g. "ascend"
    program: str  # the vendor program, e.g. "ais_bench"
    input_format: str  # `harness preprocess --format FORMAT` and the input files' suffix
    decode_flag: str  # `harness decode --bin|--npz`
    summary: str  # one line for `harness targets`
    #: (out folder, stem, image id, image path, InputSpec) -> ImageMeta; writes one image's input file
    write_input: Callable
    #: (out folder, records, InputSpec, datalist root) -> extra prep.json keys; writes the tool's other files
    finish_prepare: Callable
    #: (path the user gave) -> the folder holding the outputs
    locate_outputs: Callable
    #: (folder, Prep, output specs or None) -> iterator of (ImageMeta, outputs) in prep order
    read_outputs: Callable
    #: (folder) -> DeviceTiming (what the tool's own files say of the run; fps None when nothing)
    read_timing: Callable
    #: (model, prep folder, out, batchsize, threads, progress, **tool options) -> info dict
    emulate: Callable
    #: words for the decode flag's help: which folder to point it at
    output_help: str = ""
    #: `harness emulate` options this tool's emulate() takes beyond the common ones
    emulate_options: tuple[str, ...] = ()
    #: files besides the inputs that a prepared folder holds for this tool (removed by --overwrite)
    side_files: tuple[str, ...] = ()
    #: outputs come in the order of the list the tool was run with (`harness decode --datalist`)
    datalist_order: bool = False
    #: the vendor program's command line on a device host (`harness roundtrip`'s default tool command):
    #: placeholders as in harness.cluster.devicetool.PLACEHOLDERS
    command: tuple[str, ...] = ()
