"""Measure one grid point; run as `python -m bench.sweep.point POINT_JSON ROW_JSON` in its own process
(or forked for it by `python -m bench.sweep.point --serve DIR`, the sweep's point server: bench.sweep.runner).

Order inside the child (inputs built before any clock):
1. build the model and the batch; count parameters; analytic FLOPs;
2. FLOP counters: fvcore over the forward part (a real traced forward); FlopCounterMode over one
   whole step, which also gives the forward's share (what it counted before backward began), run on
   a fresh fp32 copy of the workload with the math SDPA backend so attention counts: on the CPU for
   a CPU point, else on the meta device (shapes only: any L without allocating); see
   `count_with_flopcounter`;
3. one untimed step under an op recorder: the attention kernels that really ran (a fused kernel
   can fall back to its math form) go into `attention_ops`;
4. wall time: `warmup` untimed steps, then `repeats` timed ones (median, IQR, p20/p80);
5. exact tracked peak memory of one step (MemTracker: parameters, gradients, optimizer state,
   activations, temporaries, inputs); on CUDA also the allocator peak and the NVML device peak.
Out-of-memory becomes status `oom`, any other exception `error`, each with a one-line reason;
what was measured before the failure stays in the row.
"""
from __future__ import annotations

import json
import os
import platform
import sys
import traceback
from pathlib import Path

import torch

from bench import results
from bench.cli import is_out_of_memory
from bench.grid import Point
from bench.measure.device import device_name
from bench.workload import DTYPE_NAMES, build_workload


def point_device_name(point: Point, cuda_initialised: bool = False) -> str:
    """The `device_name` cell of a point's row: the device that measures it, or for a predicted
    point (nothing runs on the target) the CPU that predicted it."""
    if point.predict:
        return f"none: predicted on {results.cpu_name()}"
    return device_name(point.device, cuda_initialised)


def base_row(point: Point, cuda_initialised: bool = False) -> dict:
    """Identity, grid and environment columns of a point's row (no measurements)."""
    import models
    from bench.measure.predict import prediction_method

    model_class = models.model_class(point.model)
    config = models.make_config(point.model, **point.model_config())
    return {
        "model": point.model, "variant": point.spec.variant, "workload": point.workload,
        "axis": point.axis, "seq_len": point.seq_len, "batch_size": point.batch_size,
        "n_layers": point.n_layers, "n_heads": point.n_heads, "d_model": point.d_model,
        "n_items": point.n_items,
        "causal": model_class.causal, "reconstruction": model_class.reconstruction,
        "faithful_to": model_class.faithful_to,
        "official_substitutions": getattr(model_class, "official_substitutions", ""),
        "device": point.device.split(":")[0], "device_name": point_device_name(point, cuda_initialised),
        "node": results.node_name(),
        "dtype": DTYPE_NAMES[point.dtype], "threads": point.threads or torch.get_num_threads(),
        "torch_version": torch.__version__, "python_version": platform.python_version(),
        "git_commit": results.git_commit(), "timestamp_utc": results.utc_now(),
        "mem_limit_gib": point.mem_limit_gib, "time_limit_s": point.time_limit_s, "seed": point.seed,
        "time_warmup": None if point.predict else point.warmup, "time_repeats": None if point.predict else point.repeats,
        "flops_counted": point.flops,
        "peak_tflops": None if point.peak_tflops is None else round(point.peak_tflops, 4),
        "peak_source": point.peak_source,
        "perf_env_json": json.dumps(results.perf_env(skip=scheduler_assigned(point)), sort_keys=True),
        "config_json": json.dumps(vars(config), sort_keys=True),
        "prediction": prediction_method(point.device) if point.predict else "",
        "compile_backend": point.compile,
        "loss": point.loss if point.workload == "train" else "",
        "stream_mode": model_class.stream_mode if point.workload == "stream" else "",
    }


def scheduler_assigned(point: Point) -> tuple[str, ...]:
    """Performance variables an executor sets per point, not a setting of the sweep: under Ray a GPU
    point's CUDA_VISIBLE_DEVICES is the GPU Ray gave its task (bench.sweep.executors)."""
    return ("CUDA_VISIBLE_DEVICES",) if point.executor == "ray" and point.device.startswith("cuda") and not point.predict else ()


def one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}"[:300]


def flopcounter_counts(point: Point, device: str) -> tuple[int, int]:
    """FlopCounterMode's (forward, whole step) FLOPs of a fresh fp32 copy of the point's workload
    built on `device`, both from one pass over its step (the forward: what was counted before
    backward began; bench.measure.flops.flopcounter_forward_and_step_flops); the copy is dropped
    afterwards. fp32 on every device: the meta device never autocasts, so this is the graph the
    counts have always been of, whatever `--dtype` measures."""
    from bench.measure.flops import flopcounter_forward_and_step_flops

    w = build_workload(point.model, point.model_config(), point.workload, point.batch_size,
                       point.seed, device, "fp32", loss=point.loss or "ce")
    return flopcounter_forward_and_step_flops(w.step)


def count_with_flopcounter(point: Point) -> tuple[int, int, str]:
    """(forward, step, device counted on) of FlopCounterMode for a measured point. The count is the
    same on any device (shapes only; tests/test_flops_onepass.py checks the CPU against meta for
    every model); where it runs is a matter of cost:
    - a CPU point counts a fresh copy on the CPU: a real step at the sizes a CPU measures is cheaper
      than on the meta device, whose Python shape functions cost ~0.1 ms per op (the selective
      scans' per-step ops made SIGMA's count 3-6x slower on meta); if that copy runs out of memory
      (the math attention it counts with can be larger than a fused kernel), it is counted on meta;
    - any other point counts on the meta device (nothing allocated on the accelerator), or, for
      code that reads values (e.g. `.item()`, as the official LRURec port does), which cannot run on
      shapes alone, on a fresh copy on the point's device."""
    import gc

    kind = point.device.split(":")[0]
    if kind == "cpu":
        try:
            return (*flopcounter_counts(point, point.device), kind)
        except Exception as err:
            if not is_out_of_memory(err):
                raise
        gc.collect()
        return (*flopcounter_counts(point, "meta"), "meta")
    try:
        return (*flopcounter_counts(point, "meta"), "meta")
    except (RuntimeError, NotImplementedError) as err:
        if "meta" not in str(err):
            raise
    return (*flopcounter_counts(point, point.device), kind)


def analytic_flops(point: Point, model, row: dict) -> None:
    """The analytic FLOP cells (each model's formula), or the reason they stay empty."""
    import models
    from models.losses import parse_loss

    reason = models.no_analytic_reason(type(model))
    B, L = point.batch_size, point.seq_len
    if reason:  # no formula (an official twin, a plugin without cost methods): empty cells and why
        row["flops_analytic_reason"] = reason
    elif point.workload == "stream":  # one event: models/base.py stream_flops, by the model's stream_mode
        row["fwd_flops_analytic"] = row["step_flops_analytic"] = model.stream_flops(B, L)
        row["scan_flops_analytic"] = model.stream_scan_flops(B, L)
    elif point.workload == "train":
        # the loss replaces the full-catalogue output product by its own (models/losses.py), in the
        # forward and, 3x as every product, in the step; the auxiliary branch runs in a train forward
        c = model.config
        swap = parse_loss(point.loss).output_flops(B, c.d_model, c.n_items) - 2 * B * c.d_model * c.n_items
        row["fwd_flops_analytic"] = model.forward_flops(B, L) + model.auxiliary_flops(B, L) + swap
        row["step_flops_analytic"] = model.step_flops(B, L) + 3 * swap
        row["scan_flops_analytic"] = 3 * model.scan_flops(B, L)  # recurrence backward taken as 2 x forward
    else:
        row["fwd_flops_analytic"] = row["step_flops_analytic"] = model.forward_flops(B, L)
        row["scan_flops_analytic"] = model.scan_flops(B, L)


def fill_tracked_peak(row: dict, peak) -> None:
    """The tracked-memory cells from a bench.measure.memory.TrackedPeak."""
    row["tracked_peak_bytes"] = peak.total_bytes
    row["tracked_peak_mib"] = round(peak.total_bytes / 2**20, 3)
    row["tracked_activation_bytes"] = peak.by_category_bytes.get("Activation")
    row["tracked_categories_json"] = json.dumps(peak.by_category_bytes, sort_keys=True)


COMPILED_NOT_TRACKED = ("not measured under --compile: dynamo runs the step eagerly inside MemTracker's dispatch mode, "
                        "so it would be the eager step's peak; on CUDA the allocator peak is the compiled step's")


def compile_first_call(w, device: torch.device, row: dict) -> None:
    """Run a compiled workload's first step (compilation plus one step) and record its wall time in
    `compile_time_s` and the graph breaks dynamo counted in `graph_breaks`; a compilation failure
    raises (the row becomes `error` with the reason)."""
    import time

    import torch._dynamo

    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    began = time.perf_counter()
    w.step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    row["compile_time_s"] = round(time.perf_counter() - began, 3)
    row["graph_breaks"] = sum(torch._dynamo.utils.counters["graph_break"].values())


def cuda_context_baseline(device: torch.device) -> int | None:
    """NVML's device-used bytes once the CUDA context exists and before any tensor of the workload
    does (the NVML peak's baseline); None when NVML cannot say (the sampler then says why)."""
    from bench.measure.memory import cuda_uuid, nvml_used_bytes

    index = device.index if device.index is not None else torch.cuda.current_device()
    torch.empty(1, device=device)  # the context is created lazily, at the first allocation
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    used, _status = nvml_used_bytes(index, cuda_uuid(index))
    return used


def measure(point: Point, row: dict, nvml_baseline: int | None = None) -> None:
    """Fill `row` with measurements (in place, so a failure keeps what was measured).
    `nvml_baseline`: `cuda_context_baseline`'s bytes, subtracted from the NVML peak (CUDA only)."""
    from bench.measure.dispatch import attention_ops, dispatched_ops
    from bench.measure.flops import check_nonzero, fvcore_forward_flops
    from bench.measure.memory import NvmlSampler, cuda_allocator_peak, cuda_uuid, tracked_peak
    from bench.measure.peak import utilisation
    from bench.measure.timing import measure_time

    device = torch.device(point.device)
    w = build_workload(point.model, point.model_config(), point.workload, point.batch_size,
                       point.seed, device, point.dtype, point.compile, point.loss or "ce")
    row["params_total"], row["params_trainable"] = w.model.num_params()
    row["state_bytes_per_user"] = w.state_bytes_per_user
    analytic_flops(point, w.model, row)

    if point.flops:  # on eager copies: a compiled graph computes the same products
        try:
            count = fvcore_forward_flops(w.forward_module, w.inputs)
        except Exception as err:
            # official RecBLR calls int.bit_length on a size, a tensor while tracing): the cell
            # stays empty and says why; the other counters still run
            if is_out_of_memory(err):
                raise
            row["fvcore_reason"] = one_line(err)
        else:
            row["fwd_flops_fvcore"] = check_nonzero("fvcore", count.flops)
            row["fvcore_skipped_ops"] = " ".join(sorted(count.unsupported_ops))
        fwd_count, step_count, row["flopcounter_device"] = count_with_flopcounter(point)
        row["fwd_flops_flopcounter"] = check_nonzero("FlopCounterMode", fwd_count)
        row["step_flops_flopcounter"] = check_nonzero("FlopCounterMode", step_count)

    if point.compile:
        compile_first_call(w, device, row)
        # dynamo runs a compiled function eagerly while a dispatch mode (the op recorder, MemTracker) is
        # active, so neither can see what the compiled step runs: their cells stay empty and say so
        row["attention_ops"] = ""
        row["tracked_reason"] = COMPILED_NOT_TRACKED
    else:
        row["attention_ops"] = attention_ops(dispatched_ops(w.step))
    timing = measure_time(w.step, device=device, warmup=point.warmup, repeats=point.repeats)
    row.update(time_median_ms=round(timing.median_ms, 4), time_iqr_ms=round(timing.iqr_ms, 4),
               time_p20_ms=round(timing.p20_ms, 4), time_p80_ms=round(timing.p80_ms, 4),
               time_min_ms=round(timing.min_ms, 4), time_p99_ms=round(timing.p99_ms, 4),
               time_repeats=timing.repeats,
               time_warmup=timing.warmup, timer=timing.timer, threads=timing.threads)
    step_flops = row.get("step_flops_flopcounter") or row.get("step_flops_analytic")
    achieved, mfu = utilisation(step_flops, timing.median_ms, point.peak_tflops)
    row["achieved_tflops"] = None if achieved is None else round(achieved, 6)
    row["mfu"] = None if mfu is None else round(mfu, 6)

    if not point.compile:
        fill_tracked_peak(row, tracked_peak(w.step, *w.tracked, device=device))

    if device.type == "cuda":
        cuda = cuda_allocator_peak(w.step, device)
        row["cuda_peak_alloc_mib"] = round(cuda.peak_alloc_mib, 3)
        row["cuda_peak_reserved_mib"] = round(cuda.peak_reserved_mib, 3)
        index = device.index if device.index is not None else torch.cuda.current_device()
        # device memory during one steady-state step (the allocator's pool as the timed steps left it,
        # plus what other libraries hold) beyond the CUDA context measured before the workload existed
        with NvmlSampler(index, uuid=cuda_uuid(index), baseline_used_bytes=nvml_baseline) as nvml:
            w.step()
            torch.cuda.synchronize(device)
        row["nvml_status"] = nvml.status
        row["nvml_peak_used_mib"] = None if nvml.peak_used_mib is None else round(nvml.peak_used_mib, 3)
    else:
        row["nvml_status"] = "not applicable: cpu"


def predict(point: Point, row: dict) -> None:
    """Fill `row` with the predicted cost of one step (bench.measure.predict): the step runs under
    fake tensors, nothing is allocated or timed. Filled: parameters, analytic FLOPs, FlopCounterMode's
    forward and step FLOPs of the fake step, the attention kernels dispatched, the tracked peak by
    category (rounded per storage as CUDA does for a CUDA target). Empty with a reason: fvcore (it
    traces a real forward), time, the allocator and NVML peaks, MFU. Raises RuntimeError for code
    that reads a tensor's value on the host (official LRURec's `.item()`)."""
    from bench.measure.predict import prediction_method

    row["prediction"] = prediction_method(point.device)
    row["nvml_status"] = "not applicable: predicted"
    from torch._subclasses.fake_tensor import DataDependentOutputException

    try:
        _predict(point, row)
    except DataDependentOutputException as err:
        raise RuntimeError(f"cannot be predicted: the code reads a tensor's value on the host ({err}, e.g. .item()), "
                           "which fake tensors do not have") from None


def _predict(point: Point, row: dict) -> None:
    from bench.measure.dispatch import attention_ops, dispatched_ops
    from bench.measure.flops import check_nonzero, flopcounter_forward_and_step_flops
    from bench.measure.predict import cuda_kernels, fake_workload, predicted_peak

    cuda = point.device.startswith("cuda")
    w, mode = fake_workload(point.model, point.model_config(), point.workload, point.batch_size,
                            point.seed, point.dtype, point.loss or "ce")
    row["params_total"], row["params_trainable"] = w.model.num_params()
    row["state_bytes_per_user"] = w.state_bytes_per_user
    analytic_flops(point, w.model, row)
    if point.flops:
        row["fvcore_reason"] = "not run when predicting: fvcore traces a real forward"
        with mode:  # the project's convention, on any target: the math form's products (see bench.measure.flops)
            fwd_count, step_count = flopcounter_forward_and_step_flops(w.step)
        row["fwd_flops_flopcounter"] = check_nonzero("FlopCounterMode", fwd_count)
        row["step_flops_flopcounter"] = check_nonzero("FlopCounterMode", step_count)
        row["flopcounter_device"] = "fake"
    with mode, cuda_kernels(cuda):
        row["attention_ops"] = attention_ops(dispatched_ops(w.step))
    fill_tracked_peak(row, predicted_peak(w, mode, point.device))


def run(point: Point) -> dict:
    if point.threads:
        torch.set_num_threads(point.threads)
    on_cuda = point.device.startswith("cuda") and not point.predict
    nvml_baseline = None
    if on_cuda:
        torch.cuda.init()
        nvml_baseline = cuda_context_baseline(torch.device(point.device))
    row = base_row(point, cuda_initialised=on_cuda)
    try:
        if point.predict:
            predict(point, row)
            row["status"], row["reason"] = "predicted", ""
        else:
            measure(point, row, nvml_baseline)
            row["status"], row["reason"] = "ok", ""
    except Exception as err:
        row["status"] = "oom" if is_out_of_memory(err) else "error"
        row["reason"] = one_line(err)
        if row["status"] == "error" and os.environ.get("BENCH_DEBUG"):
            traceback.print_exc()
    return row


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--serve"]:  # the sweep's point server (bench.sweep.runner.PointServer)
        from bench.sweep.runner import serve

        return serve(argv[1:])
    if len(argv) != 2:
        print("usage: python -m bench.sweep.point POINT_JSON ROW_JSON", file=sys.stderr)
        return 2
    point = Point.from_json(Path(argv[0]).read_text())
    row = run(point)
    out = Path(argv[1])
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(row))
    os.replace(tmp, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
