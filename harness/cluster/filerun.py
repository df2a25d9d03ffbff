"""`harness roundtrip`: the NPU file flow as one command. The prepared inputs go to the device host, the
vendor tool runs there (harness.cluster.devicetool), its outputs come back, and `harness decode`'s own
code (harness.npu.decode_outputs.decode_run, one row per batch size) scores them on this host.

How the files travel:
- **Ray's object store** (the default): the prep folder goes in chunks of at most CHUNK_BYTES (put once,
  read by every batch size's task), the tool's output folder comes back as a streaming generator of
  chunks, written into `--out/device-bsN` as they arrive. Nothing needs to be mounted anywhere, which is
  how device hosts usually sit (an Ascend server and a VACC host share no disk with the head); Ray
  spills to disk what its store cannot hold.
- **A shared path** (`--shared-dir DIR`, mounted at the same path on this host and the device host): the
  prep folder and the outputs are written there and nothing travels through Ray but the small result.
  Worth it for large sets where a mount exists: no copy of the inputs into the store and back.
- **No cluster**: the tool runs on this host, on the files in place.

A task needs its device resource (`device:<tool>`, e.g. `device:ais`) and the CPUs of the node holding
it, as `run --cluster` rows do; it is never retried, every wait is bounded, and a tool that fails, times
out or writes nothing, or a worker that dies, becomes a failed row with its one-line reason while the
other batch sizes go on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path

from harness.cluster import GET_TIMEOUT_S, POLL_S, _reason, connect, device_resource, plan_resources, take_lost
from harness.cluster.devicetool import ToolCommand, run_tool, write_datalist
from harness.core.config import setting
from harness.core.errors import HarnessError, first_line
from harness.core.fileio import atomic_write_bytes, make_dirs
from harness.core.folders import OWN_FILES, OutputFolder, plain_name, safe_target
from harness.measure.results import ResultsStore
from harness.measure.row import ResultRow, failed_row
from harness.npu import FILE_TOOLS
from harness.npu.prep import load_prep

CHUNK_BYTES = 32 * 1024 * 1024  # one object in the store: small enough for a node's store, big enough to stream


@dataclasses.dataclass(frozen=True)
class RoundtripClusterOptions:
    """`roundtrip --cluster`'s -o keys (the names `run --cluster` uses)."""

    #: the custom resource the tool's task needs (default device:<tool>, e.g. device:ais)
    device_resource: str | None = None
    #: the CPUs the task reserves on the device node (default: all of the smallest node holding the resource)
    device_cpus: float | None = setting(None, gt=0)


@dataclasses.dataclass
class Roundtrip:
    """One `harness roundtrip`: a prepared folder, the tool's command, and how decode scores the outputs."""

    tool_name: str  # a FILE_TOOLS name: ais, vamp
    tool_command: ToolCommand
    prep_dir: Path  # the prepared inputs (preprocess's --out) on this host
    work_dir: Path  # where device-bsN output folders go on this host (--out, or --shared-dir)
    model: Path  # the ONNX model on this host: output shapes, identity
    device_model: str  # the file the tool loads on the device host; {bs} is replaced per batch size
    ann_path: Path
    batch_sizes: list[int]
    decode: dict  # decode_run's keyword arguments (precision, evaluator, device, skip_bad, save_*)
    work_folder: OutputFolder  # work_dir, held by this command (its lock, and the manifest of what it wrote)

    @property
    def tool(self):
        return FILE_TOOLS.get(self.tool_name)

    def values(self, bs: int) -> dict:
        """The tool command's placeholders for one batch size but the paths, which the host running the
        tool fills in (its {input}, {output}, {datalist})."""
        spec = load_prep(self.prep_dir).profile.input
        return {"model": self.device_model.replace("{bs}", str(bs)), "batchsize": str(bs),
                "height": str(spec.height), "width": str(spec.width)}

    def output_dir(self, bs: int) -> Path:
        return self.work_dir / f"device-bs{bs}"

    def row_models(self, bs: int) -> tuple[str, ...]:
        """The names a decoded row of this batch size may carry as its model (the file the tool's files
        say ran, else --model), for --resume."""
        return (self.device_model.replace("{bs}", str(bs)), str(self.model))


def input_files(prep_dir: Path) -> list[str]:
    """The prepared input files in prep.json's (= the datalist's) order."""
    return [image.input_file for image in load_prep(prep_dir).sidecar.images]


# ---------------------------------------------------------------- on this host, without a cluster

def run_local(job: Roundtrip, todo: list[int], store: ResultsStore, say=print, progress=None) -> list[ResultRow]:
    """The tool on this host, on the files in place; one decoded row per batch size."""
    rows = []
    for bs in todo:
        output = fresh_output(job, bs)
        datalist = write_datalist(job.work_dir / f"device-bs{bs}-datalist.txt", job.prep_dir.resolve(),
                                  input_files(job.prep_dir))
        paths = {"input": str(job.prep_dir.resolve()), "output": str(output.resolve()), "datalist": str(datalist)}
        try:
            ran = run_tool(job.tool.program, job.tool_command, {**job.values(bs), **paths}, output)
        except HarnessError as exc:
            rows.append(add_row(store, failed(job, bs, str(exc)), say))
            continue
        rows.append(add_row(store, decoded(job, bs, store, ran, None, progress), say))
    return rows


def fresh_output(job: Roundtrip, bs: int) -> Path:
    """An empty device-bsN folder. One an earlier attempt made (a failed or interrupted row: the command
    only comes here for a batch size with no finished row) is removed first; one the harness did not make
    is never touched."""
    output = job.output_dir(bs)
    safe_target(job.work_dir, output.name)
    if output.exists() or output.is_symlink():
        if job.work_folder.listed.get(output.name) != "dir" or output.is_symlink():
            raise HarnessError(f"{output} exists and was not made by the harness; move it away or choose another "
                               f"{job.work_folder.what}")
        shutil.rmtree(output)
    make_dirs(output)
    return output


# ---------------------------------------------------------------- on the device host (a Ray task)

def device_task(program: str, tool_command: ToolCommand, values: dict, inputs: list | None, shared: dict | None):
    """On the device node: the prepared inputs into a scratch folder (object store) or the shared folder,
    the tool, then the output folder back in chunks; last, where and how the tool ran. A generator:
    Ray streams each yielded chunk to the caller as it is made."""
    import ray

    from harness.measure.envinfo import environment

    started = time.time()
    with tempfile.TemporaryDirectory(prefix="harness-device-") as scratch:
        scratch = Path(scratch)
        if shared is None:
            input_dir, output = scratch / "prep", scratch / "output"
            for ref in inputs:
                for name, data in ray.get(ref, timeout=GET_TIMEOUT_S):
                    _write_file(input_dir, name, data)
            output.mkdir()
            datalist = scratch / "datalist.txt"
        else:
            input_dir, output, datalist = Path(shared["input"]), Path(shared["output"]), Path(shared["datalist"])
            if not (input_dir / "prep.json").is_file():
                raise HarnessError(f"--shared-dir: {input_dir / 'prep.json'} is not visible on {socket.gethostname()}; "
                                   "the folder must be mounted at the same path on this host and the device host")
        write_datalist(datalist, input_dir, input_files(input_dir))
        ran = run_tool(program, tool_command, {**values, "input": str(input_dir), "output": str(output),
                                               "datalist": str(datalist)}, output)
        if shared is None:
            yield from pack(output)
    yield {"tool": ran, "node": {"node_id": ray.get_runtime_context().get_node_id(), "host": socket.gethostname(),
                                 "ip": ray.util.get_node_ip_address(), "pid": os.getpid(),
                                 "started": round(started, 3), "finished": round(time.time(), 3),
                                 "env": environment()}}


def pack(folder: Path):
    """A folder's files as chunks of (relative path, bytes), each chunk at most CHUNK_BYTES (a larger
    file goes alone); the harness's own lock and manifest stay behind."""
    chunk, size = [], 0
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.name not in OWN_FILES):
        data = path.read_bytes()
        if chunk and size + len(data) > CHUNK_BYTES:
            yield {"files": chunk}
            chunk, size = [], 0
        chunk.append((path.relative_to(folder).as_posix(), data))
        size += len(data)
    if chunk:
        yield {"files": chunk}


def _write_file(root: Path, name: str, data: bytes) -> Path:
    """root/name for a relative name that came over the network: each part a plain name (never out of root)."""
    parts = name.split("/")
    for part in parts:
        plain_name(part, "a file sent through the cluster:")
    target = root.joinpath(*parts)
    make_dirs(target.parent)
    atomic_write_bytes(safe_target(target.parent, parts[-1]), data, fsync=False)
    return target


# ---------------------------------------------------------------- on this host, with a cluster

def run_on_cluster(tool_name: str, make_job, todo: list[int], store: ResultsStore, address: str,
                   options: RoundtripClusterOptions, shared: bool, timeout: float, say=print, progress=None,
                   connect_timeout: float | None = None) -> list[ResultRow]:
    """One task per batch size on the node holding the tool's device resource; rows as they come back.
    The cluster is joined and the resource checked before make_job() (the preprocessing) runs: a
    resource no node has is refused up front."""
    ray = connect(address, *([connect_timeout] if connect_timeout else []))
    try:
        return _on_cluster(ray, tool_name, make_job, todo, store, options, shared, timeout, say, progress)
    finally:
        with contextlib.suppress(Exception):
            ray.shutdown()


@dataclasses.dataclass
class _Task:
    bs: int
    deadline: float
    received: int = 0  # bytes of outputs written so far


def _on_cluster(ray, tool_name, make_job, todo, store, options, shared, timeout, say, progress) -> list[ResultRow]:
    from ray.exceptions import GetTimeoutError, RayError

    resource = device_resource(tool_name, options.device_resource)
    cpus = plan_resources(ray.nodes(), {resource: tool_name}, options.device_cpus)[resource]
    job = make_job()
    inputs = None
    if not shared:
        inputs = [ray.put(chunk["files"]) for chunk in pack(job.prep_dir)]
    task = ray.remote(device_task)
    pending: dict = {}
    for bs in todo:
        output = fresh_output(job, bs)
        where = None
        if shared:
            where = {"input": str(job.prep_dir.resolve()), "output": str(output.resolve()),
                     "datalist": str((job.work_dir / f"device-bs{bs}-datalist.txt").resolve())}
        gen = task.options(resources={resource: 1}, num_cpus=cpus, max_retries=0, retry_exceptions=False,
                           name=f"harness {job.tool.program} bs={bs}").remote(
            job.tool.program, job.tool_command, job.values(bs), inputs, where)
        pending[gen] = _Task(bs, time.monotonic() + timeout)
    say(f"--cluster: {len(pending)} {job.tool.program} run(s) submitted ({resource} x{cpus:g} CPU; files "
        f"{'in ' + str(job.work_dir) if shared else 'through the object store'})")
    rows = []
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=POLL_S)
            for gen in ready:
                item = pending[gen]
                try:
                    value = ray.get(next(gen), timeout=GET_TIMEOUT_S)
                except StopIteration:
                    value = None
                except (RayError, GetTimeoutError) as exc:
                    del pending[gen]
                    rows.append(add_row(store, failed(job, item.bs, _task_error(exc)), say))
                    continue
                if value is not None and "files" in value:
                    for name, data in value["files"]:
                        _write_file(job.output_dir(item.bs), name, data)
                        item.received += len(data)
                    continue
                del pending[gen]
                if value is None:
                    rows.append(add_row(store, failed(job, item.bs, "cluster worker failed: the task ended without "
                                                      "its result"), say))
                    continue
                rows.append(add_row(store, decoded(job, item.bs, store, value["tool"], value["node"], progress), say))
            rows += [add_row(store, failed(job, item.bs, why), say)
                     for item, why in take_lost(ray, pending, lambda _: resource)]
    finally:
        for gen in pending:  # an interrupt (or an error) leaves nothing running on the cluster
            with contextlib.suppress(Exception):
                ray.cancel(gen, force=True)
    return rows


def _task_error(exc) -> str:
    """A failure inside the task (the tool's own line) as it is; anything else as the cluster's."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, HarnessError):
        return first_line(cause)
    return f"cluster worker failed: {_reason(exc)}"


# ---------------------------------------------------------------- rows

def decoded(job: Roundtrip, bs: int, store: ResultsStore, ran: dict, node: dict | None, progress=None) -> ResultRow:
    """`harness decode`'s row for the outputs now in device-bsN (a decode error is the row's failure)."""
    from harness.npu.decode_outputs import decode_run

    try:
        row = decode_run(job.tool_name, job.output_dir(bs), job.prep_dir, job.ann_path, model=job.model, bs=bs,
                         progress=progress, out_dir=store.out_dir, **job.decode)
        store.check_same_measurement(row.identity, row.target, row.model)
    except HarnessError as exc:
        return failed(job, bs, f"decode: {exc}")
    row.extra["device_tool"] = ran  # the command line that ran, its time and its last output lines
    if node is not None:  # the node it ran on, as run --cluster rows have
        row.extra["cluster"] = node
    return row


def failed(job: Roundtrip, bs: int, error: str) -> ResultRow:
    prep = load_prep(job.prep_dir)
    return failed_row(job.tool.device, bs, error, precision=job.decode.get("precision") or "unspecified",
                      model=job.row_models(bs)[0], profile=prep.profile.name, dataset=prep.sidecar.dataset,
                      annotations=str(job.ann_path))


def add_row(store: ResultsStore, row: ResultRow, say) -> ResultRow:
    store.add(row)
    node = row.extra.get("cluster") or {}
    where = f" on {node['host']} (node {node['node_id'][:8]})" if node.get("host") else ""
    say(f"{'✓' if row.ok else '✗'} {row.target} bs={row.bs}{where}" + ("" if row.ok else f": {row.error}"))
    return row


__all__ = ["CHUNK_BYTES", "Roundtrip", "RoundtripClusterOptions", "run_local", "run_on_cluster", "device_task",
           "pack"]
