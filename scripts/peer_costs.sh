#!/usr/bin/env bash
# Our models at the shapes of ../shared/docs/peer-costs.md (official implementations on this kind
# of CPU): B=64, L=200 and 1000, d=64, 3,417 item ids, train step, 2 threads, each model at its
# official depth/heads. Writes reports/cpu-peer-costs/<config>/results.csv (+ PNGs).
# Usage: bash scripts/peer_costs.sh [OUT_ROOT]   (python from $PYTHON, default .venv/bin/python)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=${1:-reports/cpu-peer-costs}
common=(--axis seqlen --values 200,1000 --batch-size 64 --d-model 64 --threads 2 --repeats 10 --warmup 2 --workload train)
run() { local name=$1; shift; "$PY" -m bench.sweep "${common[@]}" --out "$OUT/$name" --resume "$@"; }
run two-layer-two-head --layers 2 --heads 2 --models sasrec:attention=math,sasrec,sasrec:attn_dropout=0,linrec,eulerformer,lrurec
run linrec-d128 --layers 2 --heads 8 --d-model 128 --models linrec
run recgrela --layers 4 --heads 4 --models recgrela
run mamba4rec --layers 1 --heads 1 --models mamba4rec
