#!/bin/bash
# LinRec of budget 2x3, rerun after the first attempt died at import (another model file was mid-edit)
cd /work/main
until grep -q "^recgrela exit" reports/_scratch/ml1m-cpu-train-b/done.txt 2>/dev/null; do sleep 10; done
DATA=../shared/data/ml-1m/ml-1m.txt
COMMON="--data $DATA --max-len 200 --d-model 64 --layers 4 --heads 4 --prefixes-per-user 2 --epochs 3 --batch-size 64 --valid-users 1000 --max-minutes 15 --threads 1 --seed 2020"
rm -rf reports/_scratch/ml1m-cpu-train-b/linrec
.venv/bin/python -m bench.train --model linrec $COMMON --out reports/_scratch/ml1m-cpu-train-b/linrec > reports/_scratch/ml1m-cpu-train-b/linrec.log 2>&1
echo "linrec (rerun) exit $?" >> reports/_scratch/ml1m-cpu-train-b/done.txt
