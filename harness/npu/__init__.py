"""File-based NPU targets: Ascend `ais_bench`/`ais_infer` (.bin) and VastAI `vamp` (.npz).

The device run happens elsewhere; the harness owns both ends of it with the code in-process targets
use, so a difference in mAP is a difference of the device, not of the glue:

    prepare.py         dataset -> input files in the tool's format + prep.json sidecar (+ vdsp_params.json)
    ais.py / vamp.py   read each tool's output folder; emulate the tool with ONNX Runtime (no device needed)
    decode_outputs.py  outputs -> the common decoder -> the common evaluator -> a results row
    files.py           tensor file I/O with checks that name the image and the file
"""
