#!/usr/bin/env bash
# Reproduce a shipped model from scratch with a config shipped in fourdcrystal/configs/:
#   bash scripts/train_release_model.sh                        # release.yaml: the model shipped in fourdcrystal/data/
#   CONFIG=release2 INIT=fourdcrystal/data/fcunet-release.pt bash scripts/train_release_model.sh
#                                                              # release2.yaml: 256² patterns, crops, warm start
#   CONFIG=release2 INIT=fourdcrystal/data/fcunet-release.pt FINETUNE="release2-finetune release2-finetune2" \
#     OUT=fourdcrystal/data/fcunet-release2.pt bash scripts/train_release_model.sh
#                                                              # the shipped release2: two more stages (asinh loss)
#   DEVICE=cuda EPOCHS=60 bash scripts/train_release_model.sh  # a longer run on a GPU (a new model)
# Folders are the config's `out` keys. Every stage resumes if the script is run again after an interruption.
set -euo pipefail
CONFIG=${CONFIG:-release}
DEVICE=${DEVICE:-auto}
EPOCHS=${EPOCHS:-}
INIT=${INIT:-}
FINETUNE=${FINETUNE:-}   # further configs, space-separated, whose train sections continue from the stage before
DATA_CONFIG=$CONFIG      # the config the data set was made with (the export records it)
NOTE=${NOTE:-"trained with scripts/train_release_model.sh (config ${CONFIG}, device ${DEVICE})"}
out() { python -c "from fourdcrystal.config import load_config; print(load_config('$1', '$CONFIG')['out'])"; }
CATALOGUE=$(out select); SPECIMENS=$(out supercell); DATASET=$(out simulate); MODEL=$(out train)
EVALUATION=$(dirname "$MODEL")/evaluation

fourdcrystal select --config "$CONFIG"
fourdcrystal supercell "$CATALOGUE" --config "$CONFIG"
fourdcrystal simulate "$SPECIMENS" --config "$CONFIG"
fourdcrystal inspect "$DATASET"
train_args=(--config "$CONFIG" --device "$DEVICE")
[ -n "$EPOCHS" ] && train_args+=(--epochs "$EPOCHS")
[ -n "$INIT" ] && train_args+=(--init "$INIT")
[ -f "$MODEL/checkpoint.pt" ] && [ ! -f "$MODEL/model.pt" ] && train_args+=(--resume)
[ -f "$MODEL/model.pt" ] || fourdcrystal train "$DATASET" "${train_args[@]}"
for STAGE in $FINETUNE; do   # each further stage continues from the one before
    PREVIOUS=$MODEL
    CONFIG=$STAGE
    MODEL=$(out train)
    EVALUATION=$(dirname "$MODEL")/evaluation-$STAGE
    train_args=(--config "$CONFIG" --device "$DEVICE")
    if [ -f "$MODEL/checkpoint.pt" ]; then train_args+=(--resume); else train_args+=(--init "$PREVIOUS/model.pt"); fi
    [ -f "$MODEL/model.pt" ] || fourdcrystal train "$DATASET" "${train_args[@]}"
done
fourdcrystal tune "$MODEL/model.pt" "$DATASET" --config "$CONFIG" --device "$DEVICE"   # peak settings on the val split
fourdcrystal evaluate "$MODEL/model.pt" "$DATASET" --config "$CONFIG" --out "$EVALUATION" --device "$DEVICE"
python scripts/export_release_model.py "$MODEL/model.pt" "$EVALUATION/report.json" --config "$DATA_CONFIG" --note "$NOTE" \
    ${OUT:+--out "$OUT"}   # OUT: another weights path than fourdcrystal/data/fcunet-release.pt
