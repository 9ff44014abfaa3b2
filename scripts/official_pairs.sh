#!/usr/bin/env bash
# Each model beside its official twin (official/NAME, the official code from the peers folder) at the
# paper's config (its YAML; SASRec: RecBole's defaults), d = 64, B = 64, 3,417 item ids, train step,
# 2 threads, L = 200 and 1000:
#   OUT/NAME/            one sweep per model: params, time, exact tracked peak, FLOPs (both sides)
#   OUT/ab.csv           bench.ab NAME official/NAME per length: paired step times in one process
# Usage: bash scripts/official_pairs.sh [OUT] [NAME ...]       (default: all nine, in the order below)
# Environment: PYTHON (default .venv/bin/python); SLOW_LIMIT_S (default 300): the time limit of an
# L = 1000 point of a model whose twin runs a reference-kernel stand-in (the Mamba twins'
# selective_scan_ref loops over L, materialises (B, D, L, N) and its backward is quadratic in L):
# such points end as `timeout` rows, and their A/B timing is not run.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=${1:-reports/cpu-official-twins}
shift || true
SLOW=${SLOW_LIMIT_S:-300}
# name, layers, heads (1 where the model has none), A/B rounds (0: none; EchoMamba4Rec's and SIGMA's twins
# take minutes a step on the reference scan, and Mamba4Rec's pair already shows what that scan costs),
# slow (1: the twin runs selective_scan_ref),
# and our variant that holds the official code's never-trained parameters too (params equal), if any
CONFIGS=(
  "sasrec 2 2 10 0" "linrec 2 8 10 0" "recgrela 4 4 10 0"
  "eulerformer 2 2 6 0 eulerformer:angle_params=true" "lrurec 2 1 6 0" "recblr 2 1 6 0"
  "mamba4rec 2 1 3 1" "echomamba4rec 2 1 0 1 echomamba4rec:unused_attention_block=true" "sigma 2 1 0 1"
)
wanted=" $* "
for config in "${CONFIGS[@]}"; do
  read -r name layers heads rounds slow extra <<<"$config"
  [ $# -gt 0 ] && [[ $wanted != *" $name "* ]] && continue
  shape=(--batch-size 64 --d-model 64 --layers "$layers" --heads "$heads" --threads 2)
  for L in 200 1000; do
    if [ "$slow" = 1 ]; then
      # one timed step after the untimed op-recording step: a reference-scan step takes minutes at
      # L = 200; at L = 1000 the twin's point is given SLOW_LIMIT_S and ends as a `timeout` row
      limit=$([ "$L" = 1000 ] && echo "$SLOW" || echo 3600)
      timing=(--repeats 1 --warmup 0 --time-limit "$limit")
    else
      timing=(--repeats 5 --warmup 1)
    fi
    "$PY" -m bench.sweep --axis seqlen --values "$L" "${shape[@]}" "${timing[@]}" \
      --models "$name,${extra:+$extra,}official/$name" --out "$OUT/$name" --resume
    if [ "$rounds" = 0 ] || { [ "$slow" = 1 ] && [ "$L" = 1000 ]; }; then
      echo "bench.ab $name official/$name L=$L: not run (the twin's reference-scan steps take minutes)"
      continue
    fi
    timeout 3600 "$PY" -m bench.ab "$name" "official/$name" --seq-len "$L" "${shape[@]}" \
      --rounds "$rounds" --warmup 1 --out "$OUT/ab.csv" \
      || echo "bench.ab $name official/$name L=$L: did not finish within 3600 s (exit $?)"
  done
done
