"""`--profile auto` and `harness profiles --model`: the built-in profile found from the model's input,
its other inputs and its decoder's checks on its real outputs; refused with the candidates when the
graph and the file name do not single one out."""

import shutil

import pytest
from click.testing import CliRunner

from harness.cli import main
from harness.core.errors import HarnessError
from harness.data.demo import demo_model_path
from harness.profiles.match import candidates, choose
from tests.conftest import need_shared

#: the profile each published model in ../shared/models was made for (../shared/README.md)
SHARED_MODELS = {
    "nanodet-m-320.onnx": "nanodet-m-320",
    "nanodet-m-416.onnx": "nanodet-m-416",
    "nanodet-plus-m-416.onnx": "nanodet-plus-m-416",
    "nanodet-plus-m-320-int8-ov/model.xml": "nanodet-plus-m-320-int8-ov",
    "picodet-s-320-legacy.onnx": "picodet-s-320-legacy",
    "picodet-xs-320-lcnet-nms.onnx": "picodet-xs-320-lcnet",
    "yolov5n-640.onnx": "yolov5n-640",
    "yolov5n-640-dynamic.onnx": "yolov5n-640",
    "yolox-nano-416.onnx": "yolox-nano-416",
}


@pytest.mark.slow
@pytest.mark.parametrize("file,profile", sorted(SHARED_MODELS.items()))
def test_auto_picks_the_profile_each_shared_model_was_made_for(file, profile):
    model = need_shared("models", *file.split("/"))
    name, why = choose(model)
    assert name == profile, why
    assert "fits" in why


def test_the_demo_model_fits_only_the_demo_profile_and_says_why_the_others_do_not():
    found = candidates(demo_model_path())
    assert [c.name for c in found if c.fits] == ["demo"]
    refused = {c.name: c.why for c in found if not c.fits}
    assert "does not fit profile yolox-nano-416" in refused["yolox-nano-416"]  # its 192x192 input
    assert all(c.score == 0 for c in found if not c.fits)


def test_profiles_model_lists_candidates_and_the_choice():
    result = CliRunner().invoke(main, ["profiles", "--model", str(demo_model_path())])
    assert result.exit_code == 0, result.output
    assert "--profile auto picks demo: input NCHW 192x192 f32 fits; outputs decode as gfl; the only one of" in \
        result.output.replace("\n", " ")


def test_bench_with_profile_auto_prints_the_choice(tmp_path):
    result = CliRunner().invoke(main, ["bench", "-t", "ort", "-m", str(demo_model_path()), "-p", "auto", "--out",
                                       str(tmp_path / "b"), "--seconds", "0.05", "--max-seconds", "0.05",
                                       "--warmup", "0"])
    assert result.exit_code == 0, result.output + result.stderr
    assert "profile auto: demo (input NCHW 192x192 f32 fits" in result.output


@pytest.mark.slow
def test_an_ambiguous_model_is_refused_with_the_candidates(tmp_path):
    """yolov5n and yolov5s decode the same head: a file whose name says neither is refused."""
    model = tmp_path / "detector.onnx"
    shutil.copy(need_shared("models", "yolov5n-640.onnx"), model)
    with pytest.raises(HarnessError) as error:
        choose(model)
    message = str(error.value)
    assert message.startswith("--profile auto: 2 built-in profiles fit model detector.onnx and its file name does "
                              "not tell them apart: ")
    assert "yolov5n-640 (" in message and "yolov5s-640 (" in message and message.endswith("pass one with --profile")


def test_a_model_fixed_at_batch_4_is_probed_at_its_own_batch(tmp_path):
    import onnx

    model = onnx.load(str(demo_model_path()))
    for value in [model.graph.input[0], *model.graph.output]:
        value.type.tensor_type.shape.dim[0].dim_value = 4
    fixed = tmp_path / "demo-b4.onnx"
    onnx.save(model, str(fixed))
    assert choose(fixed)[0] == "demo"
