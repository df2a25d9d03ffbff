"""A fixed-batch-1 ONNX graph rewritten to batch N, checked twice, cached by (model sha256, N).

Why: most published exports fix the batch at 1, and making the input symbolic is not enough: their
Reshape constants hard-code the 1 ([1, 2, 58, 52, 52] in a ShuffleNet channel shuffle, [1, 85, -1]
before a YOLOX head's Transpose). benchmark_app's `-b` and trtexec's `--shapes` stop at the same
constants. The rewrite sets the batch dimension of the inputs and outputs to N and, in each
Reshape/Expand/Tile/ConstantOfShape/Slice/Resize (`sizes`) whose constant operand encodes the batch of a tensor that
carries it, replaces that 1 by 0 (Reshape: "copy the input's dimension", allowed unless allowzero) or
by N. A tensor carries the batch when it is computed from the image input and its leading dimension
is 1 at batch 1 (ONNX shape inference on the original).

(Tile needs no change: a repeat of 1 on the batch axis keeps whatever batch comes in; an Expand or
ConstantOfShape that builds a batch-1 tensor feeding a batch-carrying one gets N.)

It is checked twice before anything uses it: ONNX shape inference (strict) must give every output
[N, ...] with the batch-1 output's other dimensions, and ONNX Runtime must give, on N real images
(or seeded random input where none are given), the same outputs as N runs of the original at batch 1;
the largest absolute difference goes into the row. A graph whose outputs have no batch axis (the batch
folded into a row count, or an NMS that returns one list for the whole batch) cannot be rewritten:
its rows fail with that reason.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from harness.core.errors import HarnessError, first_line
from harness.core.fileio import atomic_write_bytes, atomic_write_text, sha256_file

#: ops whose second operand (a shape, repeats or slice bounds) may hard-code the batch
SHAPE_OPS = ("Reshape", "Expand", "Tile", "ConstantOfShape", "Slice", "Resize")
#: which operand of each holds it
OPERAND = {"Reshape": 1, "Expand": 1, "Tile": 1, "ConstantOfShape": 0, "Slice": 2, "Resize": 3}
#: outputs agree when |batch-N - batch-1| <= ATOL + RTOL * |batch-1| everywhere (fp32 kernels may
#: sum in a different order at another batch size; a wrong rewrite differs by whole values)
ATOL, RTOL = 1e-4, 1e-3
INT64_MAX = np.iinfo(np.int64).max


class BatchRewriteError(HarnessError):
    """The graph cannot be made batch-N; the message is the reason (a row's failure)."""


@dataclass(frozen=True)
class BatchModel:
    """A checked batch-N file and what the row says about it."""

    path: str
    batch: int
    source_sha256: str
    rewritten: tuple[str, ...]  # the nodes whose constant was changed
    max_abs_diff: float  # batch N against N runs at batch 1
    checked_on: str  # "N real images" / "seeded random input"
    cached: bool = False

    def row_field(self) -> dict:
        """ResultRow.batch_rewrite."""
        return {"max_abs_diff": self.max_abs_diff, "checked_on": self.checked_on, "nodes": len(self.rewritten),
                "file": Path(self.path).name, "cached": self.cached}


# - the rewrite (a pure function of a ModelProto) --------------------------------------------------

def _weights(graph) -> set[str]:
    return {init.name for init in graph.initializer}


def _real_inputs(graph) -> list:
    weights = _weights(graph)
    return [v for v in graph.input if v.name not in weights]


def _shapes(model) -> dict[str, tuple]:
    """Every tensor's inferred dims (ints, None where unknown) after ONNX shape inference."""
    from onnx import shape_inference

    from harness.model.onnx_model import tensor_info

    inferred = shape_inference.infer_shapes(model, strict_mode=False)
    out = {}
    for value in (*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output):
        info = tensor_info(value)
        if info.shape is not None:
            out[value.name] = info.dims()
    return out


def _batch_carriers(graph, image: str) -> set[str]:
    """Tensors computed from the image input (in node order: ONNX graphs are topologically sorted)."""
    reached = {image}
    for node in graph.node:
        if any(name in reached for name in node.input):
            reached.update(o for o in node.output if o)
    return reached


def _constants(graph) -> dict[str, np.ndarray]:
    """Initializers and Constant-node values by tensor name."""
    from onnx import numpy_helper

    out = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.output:
            value = next((a for a in node.attribute if a.name == "value"), None)
            if value is not None:
                out[node.output[0]] = numpy_helper.to_array(value.t)
    return out


def _attr(node, name: str, default=0):
    from onnx import helper

    found = next((a for a in node.attribute if a.name == name), None)
    return default if found is None else helper.get_attribute_value(found)


def _new_operand(node, index: int, data, batch: int, shapes, carriers, constants):
    """The rewritten constant operand `index` of `node`, or None when it does not encode the batch."""
    name = node.input[index] if len(node.input) > index else ""
    if name not in constants:
        return None
    value = constants[name]
    out = node.output[0]
    carries = data in carriers if data else out in carriers
    leading = shapes.get(data if data else out)
    if not carries or value.ndim != 1 or value.size == 0 or not leading or leading[0] != 1:
        return None
    op = node.op_type
    if op == "Reshape" and value[0] == 1:
        new = value.copy()
        new[0] = batch if _attr(node, "allowzero") else 0  # 0: the data's own leading (batch) dimension
        return new
    if op in ("Expand", "ConstantOfShape", "Resize") and value[0] == 1 and shapes.get(out, (None,))[0] == 1:
        new = value.copy()
        new[0] = batch
        return new
    if op == "Slice" and index == 2:  # ends: a slice [0:1] of axis 0 keeps the whole batch
        axes = constants.get(node.input[3]) if len(node.input) > 3 and node.input[3] else np.arange(value.size)
        if axes is None:
            return None
        new = value.copy()
        for position, axis in enumerate(np.asarray(axes).reshape(-1)):
            if int(axis) == 0 and int(value[position]) == 1:
                new[position] = INT64_MAX
        return new if not np.array_equal(new, value) else None
    return None


def rewrite_batch(model, batch: int, name: str = "model") -> tuple[object, list[str]]:
    """(a copy of `model` at batch `batch`, the names of the nodes whose constant was rewritten).
    Raises BatchRewriteError with the reason when the graph's outputs have no batch axis."""
    import onnx
    from onnx import numpy_helper

    graph = model.graph
    inputs = _real_inputs(graph)
    if not inputs:
        raise BatchRewriteError(f"model {name} has no image input")
    image = inputs[0].name
    try:
        shapes = _shapes(model)
    except Exception as exc:  # onnx raises several types for graphs it cannot infer
        raise BatchRewriteError(f"ONNX shape inference fails on the batch-1 graph ({first_line(exc, 120)})") from None
    for value in inputs[:1]:
        dims = shapes.get(value.name)
        if not dims or dims[0] != 1:
            raise BatchRewriteError(f"input {value.name} has no fixed batch of 1 ({list(dims or ())})")
    for output in graph.output:
        dims = shapes.get(output.name)
        if not dims or dims[0] != 1:
            shown = "no shape" if not dims else list(dims)
            raise BatchRewriteError(f"output {output.name} has no batch axis ({shown} at batch 1): the graph folds "
                                    "the batch into its rows, so batch-N outputs cannot be told apart per image")
    carriers = _batch_carriers(graph, image)
    constants = _constants(graph)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    new_graph = out.graph
    del new_graph.value_info[:]  # batch-1 shapes; inferred again below
    for value in [*_real_inputs(new_graph), *new_graph.output]:  # extra inputs ([1, 2] scale_factor) follow too
        dims = value.type.tensor_type.shape.dim
        if dims and dims[0].HasField("dim_value") and dims[0].dim_value == 1:
            dims[0].dim_value = batch
    changed, made = [], {}
    for node in new_graph.node:
        if node.op_type not in SHAPE_OPS:
            continue
        index = OPERAND[node.op_type]
        data = "" if node.op_type == "ConstantOfShape" else node.input[0]
        new = _new_operand(node, index, data, batch, shapes, carriers, constants)
        if new is None:
            continue
        key = (node.input[index], tuple(int(v) for v in new))
        if key not in made:
            made[key] = f"{node.input[index]}__bs{batch}_{len(made)}"
            new_graph.initializer.append(numpy_helper.from_array(new.astype(constants[node.input[index]].dtype),
                                                                 made[key]))
        node.input[index] = made[key]
        changed.append(node.name or node.output[0])
    return out, changed


def check_shapes(model, original, batch: int) -> None:
    """ONNX shape inference (strict) on the rewritten graph must give each output [batch, ...] with
    the original's other dimensions; raises BatchRewriteError naming the first that does not."""
    import onnx
    from onnx import shape_inference

    from harness.model.onnx_model import tensor_info

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    for output in probe.graph.output:  # inferred from the graph, not read back from the declarations
        output.type.tensor_type.ClearField("shape")
    try:
        inferred = shape_inference.infer_shapes(probe, strict_mode=True, data_prop=True)
    except Exception as exc:
        raise BatchRewriteError(f"ONNX shape inference rejects the batch-{batch} graph ({first_line(exc, 160)})") from None
    before = {o.name: tensor_info(o).dims() for o in original.graph.output}
    got = {o.name: tensor_info(o) for o in inferred.graph.output}
    for name, dims in before.items():
        after = got[name].dims() if name in got and got[name].shape is not None else None
        want = (batch, *dims[1:])
        if after is None or len(after) != len(want) or any(a is not None and a != w for a, w in zip(after, want)):
            raise BatchRewriteError(f"after the rewrite, ONNX shape inference gives output {name} "
                                    f"{list(after or ())}, expected {list(want)}")


# - the check on real inputs ----------------------------------------------------------------------

def compare_batches(original: str | bytes, rewritten: str | bytes, sample: np.ndarray,
                    extras: dict | None = None) -> float:
    """Largest absolute difference between the rewritten graph on the whole batch `sample` and the
    original graph on each of its images alone (ONNX Runtime, CPU, no graph optimisation, so both
    run the same kernels); raises BatchRewriteError when they disagree beyond ATOL/RTOL."""
    import onnxruntime as ort

    def session(source):
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        options.log_severity_level = 4  # the failure is raised as one line, not logged
        return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])

    try:
        whole_session, single_session = session(rewritten), session(original)
        name = whole_session.get_inputs()[0].name
        whole = whole_session.run(None, {name: sample, **(extras or {})})
        singles = [single_session.run(None, {name: sample[i:i + 1],
                                             **{k: v[i:i + 1] for k, v in (extras or {}).items()}})
                   for i in range(sample.shape[0])]
    except Exception as exc:
        raise BatchRewriteError(f"the batch-{sample.shape[0]} graph fails in ONNX Runtime ({first_line(exc, 160)})") from None
    worst = 0.0
    for index, got in enumerate(whole):
        want = np.concatenate([single[index] for single in singles], axis=0)
        if got.shape != want.shape:
            raise BatchRewriteError(f"output {index} is {list(got.shape)} at batch {sample.shape[0]}, expected "
                                    f"{list(want.shape)} (batch-1 outputs stacked)")
        if got.size == 0:
            continue
        got64, want64 = got.astype(np.float64), want.astype(np.float64)
        diff = np.abs(got64 - want64)
        worst = max(worst, float(diff.max()))
        if not np.all(diff <= ATOL + RTOL * np.abs(want64)):
            raise BatchRewriteError(f"output {index} at batch {sample.shape[0]} differs from batch-1 runs by up to "
                                    f"{float(diff.max()):.3g} (allowed {ATOL:g} + {RTOL:g} x |value|)")
    return worst


def random_input(model) -> np.ndarray:
    """Seeded random values for the image input of a ModelProto with a fixed input shape (0..255 for
    integer inputs, 0..1 otherwise)."""
    from harness.model.onnx_model import tensor_info

    info = tensor_info(_real_inputs(model.graph)[0])
    rng = np.random.default_rng(0)
    dtype = np.dtype(info.dtype)
    if np.issubdtype(dtype, np.integer):
        return rng.integers(0, 256, info.dims(), dtype=np.int64).astype(dtype)
    return rng.uniform(0, 1, info.dims()).astype(dtype)


# - the cached file -------------------------------------------------------------------------------

def cache_dir() -> Path:
    from harness.core.folders import cache_root

    return cache_root() / "batch"


def batch_model(path: str | Path, batch: int, sample: np.ndarray | None, extras: dict | None = None,
                checked_on: str = "", folder: Path | None = None) -> BatchModel:
    """The batch-`batch` version of the fixed-batch-1 ONNX file `path`, rewritten, checked on `sample`
    (a batch of `batch` preprocessed images; None: seeded random input of the input's shape) and
    cached by (sha256 of the file, batch); a cached one is reused with the check it passed."""
    import onnx

    from harness.model.onnx_model import load_graph

    path = Path(path)
    sha = sha256_file(path)
    folder = Path(folder) if folder is not None else cache_dir()
    target = folder / f"{path.stem}-{sha[:16]}-bs{batch}.onnx"
    record_path = target.with_suffix(".json")
    if target.is_file() and record_path.is_file():
        try:
            record = json.loads(record_path.read_text(encoding="utf-8"))
            if record.get("source_sha256") == sha and record.get("batch") == batch:
                return BatchModel(**{**record, "path": str(target), "rewritten": tuple(record["rewritten"]),
                                     "cached": True})
        except (OSError, ValueError, TypeError, KeyError):
            pass  # an unreadable record: rewrite again
    original = load_graph(path)
    onnx.load_external_data_for_model(original, str(path.parent))
    model, changed = rewrite_batch(original, batch, path.name)
    check_shapes(model, original, batch)
    data = model.SerializeToString()
    if sample is None:
        sample = random_input(model)
        checked_on = "seeded random input"
    worst = compare_batches(original.SerializeToString(), data, sample, extras)
    result = BatchModel(str(target), batch, sha, tuple(changed), worst,
                        checked_on or f"{sample.shape[0]} images")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(target, data, fsync=False)
        record = {k: v for k, v in asdict(result).items() if k not in ("path", "cached")}
        atomic_write_text(record_path, json.dumps({**record, "rewritten": list(changed)}, indent=1))
    except OSError as exc:
        raise HarnessError(f"batch cache {folder}: cannot write the batch-{batch} model ({first_line(exc)}); "
                           "set HARNESS_CACHE to a writable folder") from None
    return result
