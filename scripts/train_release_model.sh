#!/usr/bin/env bash
# Reproduce the model shipped in fourdcrystal/data/ from scratch (fourdcrystal/configs/release.yaml):
#   bash scripts/train_release_model.sh                 # CPU or the first GPU (device auto); the shipped
#                                                       # model: 16 epochs on 2 CPU cores, about an hour
#   DEVICE=cuda EPOCHS=60 bash scripts/train_release_model.sh   # a longer run on a GPU (a new model)
# Every stage resumes if the script is run again after an interruption.
set -euo pipefail
CONFIG=${CONFIG:-release}
DEVICE=${DEVICE:-auto}
EPOCHS=${EPOCHS:-}
NOTE=${NOTE:-"trained with scripts/train_release_model.sh (device ${DEVICE})"}

fourdcrystal select --config "$CONFIG"
fourdcrystal supercell release/catalogue --config "$CONFIG"
fourdcrystal simulate release/specimens --config "$CONFIG"
fourdcrystal inspect release/dataset
train_args=(--config "$CONFIG" --device "$DEVICE")
[ -n "$EPOCHS" ] && train_args+=(--epochs "$EPOCHS")
[ -f release/model/checkpoint.pt ] && [ ! -f release/model/model.pt ] && train_args+=(--resume)
[ -f release/model/model.pt ] || fourdcrystal train release/dataset "${train_args[@]}"
fourdcrystal tune release/model/model.pt release/dataset --device "$DEVICE"   # peak settings on the val split
fourdcrystal evaluate release/model/model.pt release/dataset --out release/evaluation --device "$DEVICE"
python scripts/export_release_model.py release/model/model.pt release/evaluation/report.json \
    --config "$CONFIG" --note "$NOTE"
