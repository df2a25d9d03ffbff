"""Stand-ins for the vendor tools in tests: the command-line shape of ais_bench and of vamp, the device's
output files written by `harness emulate`'s code (FileTool.emulate: ONNX Runtime on this CPU).

    python tests/vendor_tools.py ais --model M --input PREP --output OUT --batchsize N [--outfmt BIN] [--device 0]
    python tests/vendor_tools.py vamp -m M --vdsp_params P -i 1 -p 1 -b N -s [3,H,W] --datalist L --path_output OUT

As the real tools: an error is a message and a non-zero exit status, and nothing else is said about it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script by a device task, wherever the worker's cwd is
    sys.path.insert(0, str(ROOT))

from harness.core.errors import HarnessError  # noqa: E402
from harness.npu import FILE_TOOLS  # noqa: E402
from harness.npu.prep import load_prep  # noqa: E402


def ais(argv: list[str]) -> dict:
    parser = argparse.ArgumentParser(prog="ais_bench")
    parser.add_argument("--model", required=True)
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--batchsize", type=int, default=1)
    parser.add_argument("--outfmt", default="BIN", choices=("BIN", "NPY", "TXT"))
    parser.add_argument("--device", default="0")
    parser.add_argument("--output_dirname", default=None)
    args = parser.parse_args(argv)
    if args.outfmt != "BIN":
        raise HarnessError(f"this emulator writes --outfmt BIN only, not {args.outfmt}")
    return FILE_TOOLS.get("ais").emulate(args.model, args.input, args.output, args.batchsize,
                                         output_dirname=args.output_dirname)


def vamp(argv: list[str]) -> dict:
    parser = argparse.ArgumentParser(prog="vamp")
    parser.add_argument("-m", dest="model", required=True)
    parser.add_argument("--vdsp_params", required=True)
    parser.add_argument("-i", dest="instances", default="1")
    parser.add_argument("-p", dest="processes", default="1")
    parser.add_argument("-b", dest="batch", type=int, default=1)
    parser.add_argument("-s", dest="shape", required=True)
    parser.add_argument("--datalist", required=True)
    parser.add_argument("--path_output", required=True)
    args = parser.parse_args(argv)
    if not Path(args.vdsp_params).is_file():
        raise HarnessError(f"--vdsp_params {args.vdsp_params}: file not found")
    lines = [line.strip() for line in Path(args.datalist).read_text().splitlines() if line.strip()]
    if not lines:
        raise HarnessError(f"--datalist {args.datalist}: empty")
    prep = load_prep(Path(lines[0]).parent)  # the emulator runs the prep folder's order: the list must say it
    expected = [str(prep.folder / image.input_file) for image in prep.sidecar.images]
    if lines != expected:
        raise HarnessError(f"--datalist {args.datalist}: not the inputs of {prep.folder} in prep.json's order")
    return FILE_TOOLS.get("vamp").emulate(args.model, prep.folder, args.path_output, args.batch)


def main(argv: list[str]) -> int:
    tools = {"ais": ais, "vamp": vamp}
    if not argv or argv[0] not in tools:
        print(f"usage: vendor_tools.py {{{','.join(tools)}}} ...", file=sys.stderr)
        return 2
    try:
        info = tools[argv[0]](argv[1:])
    except HarnessError as exc:
        print(f"[ERROR] {exc}", file=sys.stderr)
        return 1
    print(f"[INFO] {argv[0]} emulated: {info['files']} files at batch {info['batch']} -> {info['folder']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
