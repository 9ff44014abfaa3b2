#!/bin/bash
# CPU budget: 1 sampled prefix per user per epoch, 3 epochs, batch 64, validation on 1000 fixed users,
# safety cap 20 min per model, 1 thread; paper sizes d=64, 4 blocks, 4 heads, L=200.
cd /work/main
DATA=../shared/data/ml-1m/ml-1m.txt
COMMON="--data $DATA --max-len 200 --d-model 64 --layers 4 --heads 4 --prefixes-per-user 1 --epochs 3 --batch-size 64 --valid-users 1000 --max-minutes 20 --threads 1 --seed 2020"
for spec in linrec recgrela:local_shortcut=false recgrela; do
  name=$(echo $spec | sed 's/[:=]/-/g')
  .venv/bin/python -m bench.train --model $spec $COMMON --out reports/_scratch/ml1m-cpu-train/$name > reports/_scratch/ml1m-cpu-train/$name.log 2>&1
  echo "$spec exit $?" >> reports/_scratch/ml1m-cpu-train/done.txt
done
