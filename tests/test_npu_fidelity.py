"""NPU rows in the fidelity report: preprocess, an independent runner's .bin/.npz, `decode --save-detections`,
then `report --fidelity` over [ort fp32, ais, vamp].

The vendor files are written here by ONNX Runtime and plain numpy (tofile / np.savez), not by harness.npu's
emulators; the vamp side runs a perturbed copy of the model, so its ΔmAP is not zero and the test can fail.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from click.testing import CliRunner

from harness.cli import main
from harness.images.preprocess import preprocess_image
from harness.npu.prep import load_prep
from tests.test_fidelity_cli import perturbed
from tests.tinymodel import write_tiny_dataset, write_tiny_model, write_tiny_profile

SIZE, STRIDES = 64, (8, 16, 32)


def cli(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


def _session_outputs(model: Path, tensors) -> list[list[np.ndarray]]:
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return [session.run(None, {name: t[None]}) for t in tensors]


@pytest.fixture(scope="module")
def npu(tmp_path_factory):
    root = tmp_path_factory.mktemp("npufid")
    model = write_tiny_model(root / "tiny.onnx", size=SIZE, strides=STRIDES, weight_std=0.5, seed=3)
    noisy = perturbed(model, root / "tiny-noisy.onnx", scale=0.6)
    profile = write_tiny_profile(root / "tiny.toml", size=SIZE, strides=list(STRIDES))
    images, ann = write_tiny_dataset(root / "ds", count=10)
    data = ["--profile", profile, "--data", images, "--ann", ann]
    cli("run", "-t", "ort", "-m", model, "--bs", "1", "--save-detections", "--save-outputs", "2", "--seconds", "0.1",
        "--max-seconds", "0.1", "--warmup", "0.05", "--out", root / "ref", *data)
    for fmt in ("bin", "npz"):
        cli("preprocess", *data, "--format", fmt, "--model", model, "--out", root / f"prep_{fmt}")

    prep = load_prep(root / "prep_bin")  # ais_bench layout: <stem>_<k>.bin per input file
    tensors = [np.fromfile(prep.folder / f"{stem}.bin", np.float32).reshape(3, SIZE, SIZE) for stem, _ in prep.images]
    ais_dir = root / "ais_out" / "2025_01_02-03_04_05"
    ais_dir.mkdir(parents=True)
    for (stem, _), outputs in zip(prep.images, _session_outputs(model, tensors)):
        for k, out in enumerate(outputs):
            out.tofile(ais_dir / f"{stem}_{k}.bin")

    prep = load_prep(root / "prep_npz")  # vamp layout: output_NNNNNN.npz in datalist order
    tensors = [preprocess_image(meta.file, meta.image_id, prep.profile.input)[0] for _, meta in prep.images]
    vamp_dir = root / "vamp_out"
    vamp_dir.mkdir()
    for index, outputs in enumerate(_session_outputs(noisy, tensors)):
        np.savez(vamp_dir / f"output_{index:06d}.npz", **{f"output_{k}": o for k, o in enumerate(outputs)})

    cli("decode", "--bin", ais_dir, "--prep", root / "prep_bin", "--ann", ann, "--precision", "fp32",
        "--save-detections", "--save-outputs", "2", "--out", root / "dec_ais")
    cli("decode", "--npz", vamp_dir, "--prep", root / "prep_npz", "--ann", ann, "--model", noisy, "--precision", "fp32",
        "--save-detections", "--out", root / "dec_vamp")
    return {"root": root, "model": model, "noisy": noisy, "ann": ann}


def _rows(folder: Path) -> list[dict]:
    return json.loads((folder / "results.json").read_text())["rows"]


def _sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_decode_rows_carry_identity_and_saved_detections(npu):
    (ref,) = _rows(npu["root"] / "ref")
    (ais_row,) = _rows(npu["root"] / "dec_ais")
    (vamp_row,) = _rows(npu["root"] / "dec_vamp")
    # the ais files say nothing of the model: prep.json's --model is the one recorded
    assert ais_row["identity"]["model_sha256"] == _sha(npu["model"]) == ref["identity"]["model_sha256"]
    # vamp: --model given at decode is not the one given to preprocess; the row names the preprocess one
    assert vamp_row["identity"]["model_sha256"] == _sha(npu["model"])
    assert any("is not the model that was given to preprocess" in n for n in vamp_row["notes"])
    for row, prep, folder in ((ais_row, "prep_bin", "dec_ais"), (vamp_row, "prep_npz", "dec_vamp")):
        identity = row["identity"]
        assert identity["prep_sha256"] == load_prep(npu["root"] / prep).sha256
        assert identity["profile_sha256"] == ref["identity"]["profile_sha256"]
        assert identity["dataset"] == ref["identity"]["dataset"]  # same annotations, same images in order
        # the images' bytes too (prep.json records each image's sha256, as the run's dataset check read them)
        images = sorted((npu["root"] / "ds").rglob("*.jpg"))
        assert len(images) == 10
        content = hashlib.sha256("\n".join(_sha(p) for p in images).encode()).hexdigest()
        assert identity["dataset"]["image_bytes_sha256"] == content
        # the saved detections' sha256, which report --fidelity checks the file against
        saved = npu["root"] / folder / row["artifacts"]["detections"]
        assert row["artifacts"]["detections_sha256"] == _sha(saved)
        assert identity["harness"] == ref["identity"]["harness"]
        assert "version not recorded" in identity["runtime"]  # hand-written files name no tool version
        assert row["artifacts"]["detections"].endswith(".detections.json.gz")
        assert set(row) >= set(ref) - {"fps_ci95"}  # the same row fields as a run row
    assert "outputs" not in vamp_row["artifacts"]  # no --save-outputs there


def test_report_fidelity_judges_every_npu_row(npu):
    exported = npu["root"] / "fidelity.json"
    cli("report", npu["root"] / "ref", npu["root"] / "dec_ais", npu["root"] / "dec_vamp", "--fidelity",
        "--format", "json", "--out", exported)
    records = {r["target"]: r for r in json.loads(exported.read_text())}
    ref = records["ort"]
    for target in ("ascend", "vacc"):
        row = records[target]
        detail = row["fidelity"]
        lo, hi = detail["bootstrap"]["interval"]["map"]
        assert lo <= detail["bootstrap"]["delta"]["map"] <= hi
        # ΔmAP from the saved detections is the difference of the rows' own mAPs (each row's evaluator)
        assert row["fidelity_dmap"] == pytest.approx(row["map"] - ref["map"], abs=2e-5)
        assert row["fidelity_agreement"] is not None
    # ais ran the reference model: the same detections; vamp ran a perturbed one
    assert records["ascend"]["fidelity_dmap"] == pytest.approx(0.0, abs=1e-4)
    assert records["ascend"]["fidelity_agreement"] == pytest.approx(1.0)
    assert records["vacc"]["fidelity_dmap"] != 0 and records["vacc"]["fidelity_agreement"] < 1
    # decode --save-outputs 2: the device's raw outputs against the reference run's, per output
    (tensors,) = records["ascend"]["fidelity"]["tensors"]["outputs"]
    assert tensors["name"] == "output" and (tensors["sqnr_db"] == "inf" or tensors["sqnr_db"] > 60)
    assert records["ascend"]["fidelity"]["tensors"]["images"] == 2


def test_emulated_outputs_name_their_model_and_runtime_and_refuse_another_prep(npu, tmp_path):
    root = npu["root"]
    cli("emulate", "--runner", "ais", "--model", npu["noisy"], "--prep", root / "prep_bin", "--out", tmp_path / "ais",
        "--output-dirname", "run1")
    cli("decode", "--bin", tmp_path / "ais" / "run1", "--prep", root / "prep_bin", "--ann", npu["ann"],
        "--out", tmp_path / "dec")
    (row,) = _rows(tmp_path / "dec")
    assert row["source"] == "emulated" and row["identity"]["model_sha256"] == _sha(npu["noisy"])
    assert row["identity"]["runtime"] == f"ais_bench (emulated: onnxruntime {ort.__version__})"
    # the same images prepared again with one fewer: these outputs are not its outputs
    images = json.loads((root / "prep_bin" / "prep.json").read_text())
    cli("preprocess", "--profile", root / "tiny.toml", "--data",
        Path(images["images"][0]["file"]).parent, "--ann", npu["ann"], "--format", "bin", "--limit", "9",
        "--out", tmp_path / "prep9")
    result = CliRunner().invoke(main, ["decode", "--bin", str(tmp_path / "ais" / "run1"), "--prep", str(tmp_path / "prep9"),
                                       "--ann", str(npu["ann"]), "--out", str(tmp_path / "dec9")])
    assert result.exit_code == 2 and "were made from another preparation" in result.output
