"""The TensorRT build, in small steps, for 10.x and 11.x alike.

    network  strongly typed (NetworkDefinitionCreationFlag.STRONGLY_TYPED, bound in 10.0 to 11.4):
             the precision comes from the ONNX (prepare.py); only TensorRT 10's legacy implicit
             int8 builds weakly typed (calib.py)
    config   workspace limit, TF32 set or cleared (TensorRT enables it by default; the harness
             records it per row and defaults to off), ProfilingVerbosity.DETAILED so the engine
             inspector can say which precision every layer runs in, one optimisation profile
    plan     build_serialized_network; a calibrator's own error is re-raised after the build
"""

from __future__ import annotations

from pathlib import Path

from harness.core.errors import HarnessError
from harness.targets.trt.api import strongly_typed_flags


def parse_onnx(trt, logger, onnx_path: Path, strongly_typed: bool = True):
    """(builder, network, parser) for an ONNX file."""
    builder = trt.Builder(logger)
    network = builder.create_network(strongly_typed_flags(trt) if strongly_typed else 0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        first = (errors[0].strip().splitlines() or ["?"])[0] if errors else "unknown error"
        raise HarnessError(f"model {onnx_path}: TensorRT's ONNX parser rejects it ({first[:200]})")
    return builder, network, parser


def add_profile(builder, config, shapes: dict) -> None:
    """One optimisation profile: {input name: (min, opt, max)}."""
    profile = builder.create_optimization_profile()
    for name, (low, opt, high) in shapes.items():
        profile.set_shape(name, low, opt, high)
    config.add_optimization_profile(profile)


def make_config(trt, builder, workspace_mib: int, tf32: bool, shapes: dict, dynamic: bool):
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mib) << 20)
    if tf32:
        config.set_flag(trt.BuilderFlag.TF32)
    else:
        config.clear_flag(trt.BuilderFlag.TF32)
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    if dynamic:
        add_profile(builder, config, shapes)
    return config


def serialize(builder, network, config, calibrator=None) -> bytes:
    plan = builder.build_serialized_network(network, config)
    error = getattr(calibrator, "error", None) if calibrator is not None else None
    if error is not None:
        raise HarnessError(f"int8 calibration failed: {error}")
    if plan is None:
        raise HarnessError("TensorRT could not build an engine for this model (see the TensorRT log above; "
                           "try a larger workspace_mib in targets/trt.toml or another precision)")
    return bytes(plan)


def engine_information(trt, engine) -> str:
    """The engine inspector's JSON for the whole engine."""
    inspector = engine.create_engine_inspector()
    return inspector.get_engine_information(trt.LayerInformationFormat.JSON)
