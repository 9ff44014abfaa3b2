#!/usr/bin/env bash
# The GPU check: everything the suite can only learn on a GPU, in one script of a few minutes.
#
#   bash scripts/gpu_check.sh [OUT]        # default OUT: reports/gpu-<device name>
#
# What it runs (each step's log in OUT/logs/; a failing step is recorded and the next one runs):
#   0. environment: nvidia-smi, torch and CUDA versions, which optional packages import;
#   1. the CUDA tests that skip on a CPU machine (CUDA events, allocator peak, NVML sampling);
#   2. the ten models at one paper point (B=2048, L=200, d=64, 4 layers, 4 heads; train): tracked,
#      CUDA allocator and NVML peaks side by side, step time, MFU against the datasheet peak;
#   3. Table 3's depths (layers 1..6) for RecGRELA and, where RecBole imports, its official twin;
#   4. bf16 autocast on two models at the paper point (`--dtype bf16`);
#   5. the same paper point predicted under fake tensors (`--predict`), put beside step 2's
#      tracked, allocator and NVML peaks: what the prediction misses on a real GPU;
#   6. torch.compile (inductor) on two models at the paper point: compile time, and step time
#      against step 2's eager rows;
#   7. the stream workload (one new event, B=1, 2 layers, L = 1024 and 8192) for the ten models:
#      the cache and state steps' CUDA paths, per-event time and p99, state bytes per user;
#   8. the catalogue at 1e6 items, ce against sampled:128, RecGRELA and SASRec train (B=256, L=200);
# then writes OUT/README.md with the tables read back from the CSVs. Nothing is guessed: a step
# that could not run says so in the README.
#
# For the project's lent device machine (no network there): packages the image lacks travel as
# wheels in .whl/ (see /work/.library/device/README.md); this script installs them to a scratch
# site when the folder exists; the peers folder (official code) travels as a copy named by
# $SEQREC_PEERS, else official/recgrela is left out of step 3 and the README says so.
# `GPU_CHECK_DEVICE=cpu GPU_CHECK_SMALL=1` runs the same steps on a
# CPU at a tiny shape, to check the script itself.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DEVICE=${GPU_CHECK_DEVICE:-cuda}
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/gpu-check-site .whl/*.whl \
    && export PYTHONPATH="/tmp/gpu-check-site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
NAME=$("$PY" -c "import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu')" 2>/dev/null \
       | tr -c 'A-Za-z0-9\n' '-' | tr 'A-Z' 'a-z' | sed 's/--*/-/g; s/-$//')
OUT=${1:-reports/gpu-${NAME:-unknown}}
mkdir -p "$OUT/logs"
MODELS=recgrela,linrec,sasrec,eulerformer,mamba4rec,lrurec,echomamba4rec,recblr,sigma,elastic
if [ -n "${GPU_CHECK_SMALL:-}" ]; then
  GRID=(--batch-size 2 --d-model 8 --heads 2 --n-items 50)
  SHAPE=("${GRID[@]}" --warmup 0 --repeats 1)
  LAYERS=1,2
  STREAM=(--values 16,32 --d-model 8 --n-items 50 --repeats 5)
  ITEMS=(--values 200 --batch-size 2 --seq-len 16 --d-model 8 --heads 2 --loss ce,sampled:8 --repeats 1)
else
  GRID=(--preset paper)
  SHAPE=("${GRID[@]}" --warmup 2 --repeats 5)
  LAYERS=1,2,3,4,5,6
  STREAM=(--values 1024,8192 --d-model 64 --repeats 100)
  ITEMS=(--values 1000000 --batch-size 256 --seq-len 200 --d-model 64 --heads 2 --loss ce,sampled:128 --repeats 5)
fi
declare -A STATUS

step() {  # step NAME COMMAND...: run, log, remember the exit status
  local name=$1; shift
  echo "== $name: $*" | tee -a "$OUT/logs/steps.txt"
  local start=$SECONDS
  "$@" >"$OUT/logs/$name.log" 2>&1
  local rc=$?
  STATUS[$name]="exit $rc in $((SECONDS - start)) s"
  echo "   ${STATUS[$name]}" | tee -a "$OUT/logs/steps.txt"
}

step environment bash -c "nvidia-smi || true; $PY -c 'import torch, sys; print(sys.version); print(torch.__version__, torch.version.cuda, torch.cuda.is_available())'; \
  for m in fvcore pynvml recbole einops filelock pandas matplotlib; do $PY -c \"import \$m\" 2>/dev/null && echo \"\$m: ok\" || echo \"\$m: missing\"; done"
step cuda_tests "$PY" -m pytest -q -p no:cacheprovider tests/test_measure.py tests/test_nvml_mapping.py tests/test_dtype.py tests/test_peak.py
step paper_point "$PY" -m bench.sweep --axis seqlen --values 200 --device "$DEVICE" --models "$MODELS" "${SHAPE[@]}" \
  --out "$OUT/paper-point"
TWIN=,official/recgrela  # the official twin needs the peers folder and RecBole; without them, ours alone
"$PY" -c "from bench.adapters.official import load_official; load_official('recgrela')" >"$OUT/logs/twin.log" 2>&1 \
  || { TWIN=; echo "   official/recgrela left out: $(tail -1 "$OUT/logs/twin.log")" | tee -a "$OUT/logs/steps.txt"; }
step table3 "$PY" -m bench.sweep --axis layers --values "$LAYERS" --device "$DEVICE" --models "recgrela$TWIN" \
  "${SHAPE[@]}" --no-flops --out "$OUT/table3"
step bf16 "$PY" -m bench.sweep --axis seqlen --values 200 --device "$DEVICE" --models recgrela,sasrec --dtype bf16 \
  "${SHAPE[@]}" --no-flops --out "$OUT/bf16"
step predicted "$PY" -m bench.sweep --axis seqlen --values 200 --device "$DEVICE" --models "$MODELS" "${GRID[@]}" \
  --predict --out "$OUT/predicted"
step compile "$PY" -m bench.sweep --axis seqlen --values 200 --device "$DEVICE" --models recgrela,sasrec --compile \
  "${SHAPE[@]}" --no-flops --out "$OUT/compile"
step stream "$PY" -m bench.sweep --axis seqlen --workload stream --batch-size 1 --layers 2 --heads 2 --device "$DEVICE" \
  --models "$MODELS" "${STREAM[@]}" --no-flops --out "$OUT/stream"
step items "$PY" -m bench.sweep --axis items --models recgrela,sasrec --layers 2 --device "$DEVICE" "${ITEMS[@]}" \
  --no-flops --out "$OUT/items"

"$PY" - "$OUT" <<'PYEOF' >"$OUT/README.md" 2>"$OUT/logs/readme.log"
import csv, os, sys
out = sys.argv[1]
steps = open(os.path.join(out, "logs", "steps.txt")).read()
print(f"# GPU check: {os.path.basename(out)}\n\nMade by `bash scripts/gpu_check.sh` (steps and exit statuses below; "
      "logs in logs/). Every figure is read from the CSVs beside this file.\n\n```\n" + steps + "```\n")
cols = ["model", "variant", "workload", "n_layers", "dtype", "status", "time_median_ms", "tracked_peak_mib",
        "cuda_peak_alloc_mib", "cuda_peak_reserved_mib", "nvml_peak_used_mib", "nvml_status", "achieved_tflops", "mfu",
        "compile_time_s", "graph_breaks", "seq_len", "n_items", "loss", "stream_mode", "state_bytes_per_user", "time_p99_ms",
        "reason"]
def read(part):
    path = os.path.join(out, part, "results.csv")
    return list(csv.DictReader(open(path))) if os.path.exists(path) else None


def ratio(a, b):
    try:
        return f"{float(a) / float(b):.3f}"
    except (TypeError, ValueError, ZeroDivisionError):
        return ""


def table(head, rows):
    print("| " + " | ".join(head) + " |\n|" + " --- |" * len(head))
    for cells in rows:
        print("| " + " | ".join(str(c) for c in cells) + " |")
    print()


measured, predicted, compiled = read("paper-point"), read("predicted"), read("compile")
if measured and predicted:
    print("## predicted vs measured at the paper point (train)\n")
    print("MiB; `predicted` is the fake-tensor step (`--predict`), the others step 2's measurements.\n")
    by_model = {r["model"]: r for r in predicted}
    table(["model", "predicted", "tracked", "allocator peak", "allocator reserved", "NVML", "predicted / allocator peak"],
          [[r["model"], by_model.get(r["model"], {}).get("tracked_peak_mib", "") or by_model.get(r["model"], {}).get("reason", ""),
            r["tracked_peak_mib"], r["cuda_peak_alloc_mib"], r["cuda_peak_reserved_mib"], r["nvml_peak_used_mib"],
            ratio(by_model.get(r["model"], {}).get("tracked_peak_mib"), r["cuda_peak_alloc_mib"])] for r in measured])
if measured and compiled:
    print("## torch.compile vs eager at the paper point (train)\n")
    eager = {r["model"]: r for r in measured}
    table(["model", "backend", "compile_time_s", "graph_breaks", "compiled ms", "eager ms", "compiled / eager", "status"],
          [[r["model"], r["compile_backend"], r["compile_time_s"], r["graph_breaks"], r["time_median_ms"],
            eager.get(r["model"], {}).get("time_median_ms", ""),
            ratio(r["time_median_ms"], eager.get(r["model"], {}).get("time_median_ms")),
            f"{r['status']} {r['reason'][:80]}"] for r in compiled])
for part in ("paper-point", "table3", "bf16", "predicted", "compile", "stream", "items"):
    path = os.path.join(out, part, "results.csv")
    print(f"## {part}\n")
    if not os.path.exists(path):
        print("not measured: the step wrote no results.csv (see its log)\n")
        continue
    rows = list(csv.DictReader(open(path)))
    if rows:
        first = rows[0]
        print(f"device {first['device_name']}, torch {first['torch_version']}, B={first['batch_size']}, "
              f"L={first['seq_len']}, d={first['d_model']}, heads {first['n_heads']}, commit {first['git_commit']}, "
              f"peak {first.get('peak_tflops', '')} TFLOP/s ({first.get('peak_source', '')})\n")
    print("| " + " | ".join(cols) + " |\n| " + " | ".join("---" for _ in cols) + " |")
    for row in rows:
        print("| " + " | ".join(str(row.get(c, ""))[:80].replace("|", "/") for c in cols) + " |")
    print()
PYEOF
echo "wrote $OUT (README.md, logs/, and one folder per step)"
