"""`harness run --cluster`: each (target, batch size) row as one Ray task on the host that holds its device.

Ray places the work; this module only says what a row needs. A row needs its device's custom resource
(`device:<target>`, capacity 1 per device, declared with `ray start --resources`), so timed work never
overlaps on one device, and all of that host's CPUs, so no other task lands beside a timed CPU row. A row
is never retried (`max_retries=0`): a worker that dies becomes a failed row with its reason. Every
connect, wait and get is under a timeout, and a resource no node has is refused before anything is
submitted (Ray would leave such a task pending forever). Rows come back into the command's ResultsStore
as they finish; the row's machine fields (machine_state, identity.machine, `cluster.env`) are the worker
host's, and the files it saved (--save-detections / --save-outputs) come back with it into --out. With
--accuracy-shards N, a CPU target row's accuracy pass runs first in N shards on any CPU workers
(harness.cluster.shards), and the row task, once they are back, times the target and scores their merged
detections. Ray is imported only here and only by `--cluster` (the `cluster` extra).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import tempfile
import threading
import time
from pathlib import Path

from harness.core.errors import HarnessError, first_line
from harness.measure import identity as ident
from harness.measure.results import ResultsStore
from harness.measure.row import ResultRow, failed_row
from harness.measure.runner import RunConfig

#: --option keys `run --cluster` takes for itself (not target options)
CLUSTER_OPTIONS = ("device_resource", "device_cpus")
CONNECT_TIMEOUT_S = 60.0
POLL_S = 1.0  # how often the driver wakes to check deadlines and lost resources
GET_TIMEOUT_S = 120.0  # fetching a finished row's small result from the object store


def device_resource(target: str, name: str | None = None) -> str:
    """The custom resource a target's rows need (`-o device_resource=NAME` overrides)."""
    return name or f"device:{target}"


def split_options(pairs: dict) -> tuple[dict, dict]:
    """(target options, cluster options) from --option pairs."""
    return ({k: v for k, v in pairs.items() if k not in CLUSTER_OPTIONS},
            {k: v for k, v in pairs.items() if k in CLUSTER_OPTIONS})


def connect(address: str, timeout: float = CONNECT_TIMEOUT_S):
    """Join an existing cluster (never start one: ray.init(address=None) would); ray.init itself has no
    connect timeout, so it runs in a thread that is given up after `timeout` seconds."""
    try:
        import ray
    except ImportError:
        raise HarnessError("--cluster needs Ray: pip install 'harness[cluster]' (the same Ray version as the "
                           "cluster's)") from None
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    outcome: dict = {}

    def init():
        try:
            ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False,
                     configure_logging=True)
            outcome["ok"] = True
        except BaseException as exc:  # handed to the caller's thread
            outcome["error"] = exc

    thread = threading.Thread(target=init, name="ray-connect", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise HarnessError(f"--cluster {address}: no Ray cluster answered within {timeout:g} s "
                           "(is `ray start --head` running there, and the port reachable?)")
    if "error" in outcome:
        raise HarnessError(f"--cluster {address}: cannot connect ({first_line(outcome['error'])})")
    return ray


def describe_nodes(nodes: list[dict]) -> str:
    """The live nodes in one line: address, device resources, CPUs."""
    parts = []
    for node in nodes:
        res = node.get("Resources", {})
        devices = sorted(k for k in res if k.startswith("device:") or not (k in ("CPU", "GPU", "memory",
                         "object_store_memory") or k.startswith("node:") or k.startswith("accelerator_type")))
        parts.append(f"{node.get('NodeManagerAddress', '?')} ({', '.join(devices) or 'no device resource'}, "
                     f"{res.get('CPU', 0):g} CPU)")
    return "; ".join(parts) or "none"


def plan_resources(nodes: list[dict], needed: dict[str, str], declared_cpus: float | None) -> dict[str, float]:
    """resource -> CPUs a row reserves: every CPU of the smallest node holding the resource, or the
    declared amount. One line, naming the resource and the nodes there are, for a resource no live node
    has (or fewer CPUs than declared): Ray would leave the task pending forever."""
    alive = [n for n in nodes if n.get("Alive")]
    cpus = {}
    for resource, target in needed.items():
        holders = [n for n in alive if n.get("Resources", {}).get(resource, 0) >= 1]
        if not holders:
            raise HarnessError(f"--cluster: no node has resource {resource} (target {target}); nodes: "
                               f"{describe_nodes(alive)}. Declare it with ray start --resources "
                               f"'{{\"{resource}\": 1}}' or name another with -o device_resource=NAME")
        most = min(n["Resources"].get("CPU", 0) for n in holders)
        if declared_cpus is not None and declared_cpus > most:
            raise HarnessError(f"-o device_cpus={declared_cpus:g}: the nodes with {resource} have {most:g} CPU")
        cpus[resource] = declared_cpus if declared_cpus is not None else most
    return cpus


def run_row(config: RunConfig, *shards: dict) -> dict:
    """On the worker: one (target, bs) row through the ordinary runner, into a scratch store whose
    environment is this host's; returns the row as a dict with where and when it ran, and the bytes of
    the files it saved (--save-detections / --save-outputs), which the command writes into its --out.
    `shards`: the results of harness.cluster.shards.run_shard (--accuracy-shards), whose merged pass the
    row scores instead of running its own."""
    from harness.cluster.shards import merge, node_info
    from harness.measure.artifacts import row_files
    from harness.measure.envinfo import environment
    from harness.measure.runner import run

    started = time.time()
    env = environment()
    if shards:
        config = dataclasses.replace(config, accuracy=merge([s["passed"] for s in shards]),
                                     notes=[*config.notes, *shard_notes([s["node"] for s in shards], env)])
    with tempfile.TemporaryDirectory(prefix="harness-row-") as scratch:
        with ResultsStore(scratch, env) as store:
            rows = run(config, store)
        files = {}
        for row in rows:
            files.update(row_files(Path(scratch), row))
    finished = time.time()
    node = {**node_info(), "started": round(started, 3), "finished": round(finished, 3), "env": env}
    if shards:
        node["accuracy_shards"] = [s["node"] for s in shards]
    return {"rows": [r.to_dict() for r in rows], "node": node, "files": files}


def shard_notes(nodes: list[dict], env: dict) -> list[str]:
    """What a row says of an accuracy pass made in shards: where, and a CPU model other than its host's."""
    hosts = ", ".join(dict.fromkeys(n["host"] for n in nodes))
    notes = [f"accuracy pass in {len(nodes)} shard(s) on Ray workers ({hosts}), merged and scored once: no e2e "
             "img/s and no stage times (they were not this host's)"]
    other = sorted({n.get("cpu") for n in nodes} - {env.get("cpu")}, key=str)
    if other:
        notes.append(f"accuracy shards ran on another CPU model ({', '.join(map(str, other))}) than this host's "
                     f"({env.get('cpu')}): their detections may differ in the last digits from this host's own")
    return notes


@dataclasses.dataclass
class _Submitted:
    config: RunConfig
    resource: str
    deadline: float


def run_rows(address: str, configs: list[RunConfig], store: ResultsStore, cluster_options: dict,
             row_timeout: float, say=print, connect_timeout: float = CONNECT_TIMEOUT_S,
             accuracy_shards: int = 1) -> list[ResultRow]:
    """Every (target, bs) of `configs` as a Ray task; rows are added to `store` as they finish.
    accuracy_shards > 1: the accuracy pass of each CPU target's row runs first in that many shards on the
    cluster's CPU workers (harness.cluster.shards), and the row task, on its device host, scores it."""
    work = []
    for config in configs:
        for bs in config.batch_sizes:
            one = dataclasses.replace(config, batch_sizes=[bs], canvases=None, datasets=None, keep_going=True)
            key = (config.target, config.model.replace("{bs}", str(bs)), config.profile.name,
                   getattr(config.options, "precision", None), bs)
            if store.done(key):
                say(f"{config.target} bs={bs}: already in {store.path}, skipped (--resume)")
                continue
            work.append(one)
    if not work:
        return []
    ray = connect(address, connect_timeout)
    try:
        return _run_connected(ray, work, store, cluster_options, row_timeout, say, accuracy_shards)
    finally:
        with contextlib.suppress(Exception):
            ray.shutdown()


def _run_connected(ray, work, store, cluster_options, row_timeout, say, accuracy_shards=1) -> list[ResultRow]:
    from ray.exceptions import GetTimeoutError, RayError

    needed = {device_resource(c.target, cluster_options.get("device_resource")): c.target for c in work}
    declared = cluster_options.get("device_cpus")
    cpus = plan_resources(ray.nodes(), needed, None if declared is None else float(declared))
    task = ray.remote(run_row)
    pending: dict = {}
    shard_refs: list = []
    sharded = _shardable(work, accuracy_shards, say)
    for config in work:
        resource = device_resource(config.target, cluster_options.get("device_resource"))
        name = f"harness {config.target} bs={config.batch_sizes[0]}"
        shards = _submit_shards(ray, config, accuracy_shards, name) if config.target in sharded else []
        shard_refs += shards
        # the row task starts once its shards are back (Ray resolves the ObjectRefs it is given)
        ref = task.options(resources={resource: 1}, num_cpus=cpus[resource], max_retries=0, retry_exceptions=False,
                           name=name).remote(config, *shards)
        pending[ref] = _Submitted(config, resource, time.monotonic() + row_timeout)
    say(f"--cluster: {len(pending)} row(s) submitted ({', '.join(f'{r} x{n:g} CPU' for r, n in cpus.items())})"
        + (f", the accuracy passes of {', '.join(sorted(sharded))} in {accuracy_shards} shards" if sharded else ""))
    rows = []
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=POLL_S)
            for ref in ready:
                item = pending.pop(ref)
                try:
                    result = ray.get(ref, timeout=GET_TIMEOUT_S)
                except (RayError, GetTimeoutError) as exc:
                    rows.append(_add(store, _failed(item, f"cluster worker failed: {_reason(exc)}"), say))
                    continue
                for data in result["rows"]:
                    row = _with_node(store, ResultRow.from_dict(data), result["node"])
                    rows.append(_add(store, _with_files(store, row, result.get("files") or {}), say))
            rows += [_add(store, _failed(item, why), say) for item, why in take_lost(ray, pending, _resource)]
    finally:
        for ref in [*pending, *shard_refs]:  # an interrupt (or an error) leaves nothing running on the cluster
            with contextlib.suppress(Exception):
                ray.cancel(ref, force=True)
    return rows


def _shardable(work: list[RunConfig], shards: int, say) -> set[str]:
    """The targets whose accuracy pass may run in shards on CPU workers: those that run on the CPU (a GPU
    or NPU target's pass stays on its device host, said once)."""
    if shards <= 1:
        return set()
    from harness.targets import get_target

    able = set()
    for target in dict.fromkeys(c.target for c in work):
        kind = get_target(target).device_kind
        if kind == "cpu":
            able.add(target)
        else:
            say(f"--accuracy-shards: target {target} runs on a {kind}; its rows keep their accuracy pass on their "
                "device host (shards run on CPU workers)")
    return able


def _submit_shards(ray, config: RunConfig, shards: int, name: str) -> list:
    """The shard tasks of one row's accuracy pass (the dataset as the row will load it)."""
    from harness.cluster.shards import PassSpec, submit
    from harness.data.coco import load_dataset
    from harness.measure.runner import model_for_batch

    bs = config.batch_sizes[0]
    model = str(ident.resolve_model(model_for_batch(config.model, bs)[0]))
    dataset = load_dataset(config.images_dir, config.ann_path, config.limit, config.skip_bad_images)
    spec = PassSpec(config.target, model, config.profile, config.options, bs, config.workers, config.skip_bad_images)
    return submit(ray, spec, list(dataset.images), shards, name)


def _with_files(store: ResultsStore, row: ResultRow, files: dict) -> ResultRow:
    """The files the row saved on its worker, written into the command's --out (the row fails if they
    did not come back intact)."""
    if not (row.ok and row.artifacts):
        return row
    from harness.measure.artifacts import place_row_files

    try:
        place_row_files(store.out_dir, row, files)
    except HarnessError as exc:
        failed = failed_row(row.target, row.bs, str(exc), precision=row.precision, model=row.model,
                            profile=row.profile)
        failed.extra["cluster"] = row.extra.get("cluster")
        return failed
    return row


def fan_out(address: str, fn, shared, items: list[tuple], timeout: float, connect_timeout: float = CONNECT_TIMEOUT_S):
    """Untimed work spread over the cluster's CPU workers: yields (key, fn(shared, *args)) for each
    (key, args) of `items` as they finish. `shared` goes to the object store once. One CPU a task,
    SPREAD (the default packs tasks onto the driver's node), never retried; a task that fails or is not
    back within `timeout` seconds stops the whole fan-out with one line (the caller's results are
    resumable)."""
    from ray.exceptions import GetTimeoutError, RayError

    ray = connect(address, connect_timeout)
    pending: dict = {}
    try:
        shared_ref = ray.put(shared)
        task = ray.remote(fn).options(num_cpus=1, scheduling_strategy="SPREAD", max_retries=0, retry_exceptions=False)
        pending = {task.remote(shared_ref, *args): key for key, args in items}
        deadline = time.monotonic() + timeout
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=POLL_S)
            for ref in ready:
                key = pending.pop(ref)
                try:
                    yield key, ray.get(ref, timeout=GET_TIMEOUT_S)
                except (RayError, GetTimeoutError) as exc:
                    raise HarnessError(f"--cluster: {key} failed on a worker: {_reason(exc)}") from None
            if pending and time.monotonic() > deadline:
                raise HarnessError(f"--cluster: {len(pending)} task(s) not back within {timeout:g} s; cancelled")
    finally:
        for ref in pending:
            with contextlib.suppress(Exception):
                ray.cancel(ref, force=True)
        with contextlib.suppress(Exception):
            ray.shutdown()


def take_lost(ray, pending: dict, resource_of) -> list[tuple[object, str]]:
    """The pending tasks past their deadline, or whose device resource (`resource_of(item)`) left the
    cluster (its node died): cancelled and taken out of `pending`, each with its failed row's reason, so
    no row waits forever (run --cluster rows and roundtrip's tool tasks alike)."""
    lost = []
    now = time.monotonic()
    available = ray.cluster_resources() if pending else {}
    for ref, item in list(pending.items()):
        resource = resource_of(item)
        if now > item.deadline:
            reason = "no result within --cluster-timeout; cancelled"
        elif available.get(resource, 0) < 1:
            reason = f"resource {resource} left the cluster (its node stopped)"
        else:
            continue
        with contextlib.suppress(Exception):
            ray.cancel(ref, force=True)
        del pending[ref]
        lost.append((item, f"cluster worker failed: {reason}"))
    return lost


def _resource(item) -> str:
    return item.resource


def _reason(exc) -> str:
    """The first line of what Ray says, without its traceback banner; for an error raised inside the
    row, that error's own line."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        return f"{type(cause).__name__}: {first_line(cause)}"
    text = str(exc).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("Traceback")]
    return f"{type(exc).__name__}: {lines[0] if lines else text}"


def _failed(item: _Submitted, error: str) -> ResultRow:
    config = item.config
    bs = config.batch_sizes[0]
    return failed_row(config.target, bs, error, precision=getattr(config.options, "precision", None) or "-",
                      model=config.model.replace("{bs}", str(bs)), profile=config.profile.name,
                      dataset=str(config.images_dir), annotations=str(config.ann_path), notes=list(config.notes))


def _with_node(store: ResultsStore, row: ResultRow, node: dict) -> ResultRow:
    """The row with the node it ran on; a resumed folder's rows of the same target must be the same
    measurement (machine included: a device is a host's)."""
    row.extra["cluster"] = node
    for old in store.rows:
        if old.target == row.target and old.identity and row.identity:
            problem = ident.mismatch(old.identity, row.identity,
                                     [f for f in ident.FIELDS if f != "model_sha256" or old.model == row.model])
            if problem:
                return failed_row(row.target, row.bs, f"--resume: {store.path} holds another measurement "
                                  f"({old.target} bs={old.bs}: {problem}); choose another --out, or --overwrite",
                                  precision=row.precision, model=row.model, profile=row.profile)
    return row


def _add(store: ResultsStore, row: ResultRow, say) -> ResultRow:
    store.add(row)
    node = row.extra.get("cluster") or {}
    where = f" on {node['host']} (node {node['node_id'][:8]})" if node.get("host") else ""
    say(f"{'✓' if row.ok else '✗'} {row.target} bs={row.bs}{where}"
        + ("" if row.ok else f": {row.error}"))
    return row


__all__ = ["CLUSTER_OPTIONS", "device_resource", "split_options", "connect", "plan_resources", "run_rows", "fan_out"]
