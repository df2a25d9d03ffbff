"""Fidelity: how far a row sits from its fp32 reference row, and whether the difference is real.

Pure functions over saved artefacts (COCO result dicts, raw output arrays); one module per job:
artifacts (save/read), tensors (SQNR, cosine, abs error), harness.decode.agreement (detection-vs-detection
matching), cocomatch + weighted + bootstrap (ΔmAP with a paired bootstrap interval), delta_ap
(per-class / per-size ΔAP), gate (--fail-if), pairing (which row is whose reference) and
markdown (the report section).
"""
