#!/bin/bash
# 72 held-out passkey probes a length (24 a depth at 0, 0.5, 1; fresh keys, seed 7100) for the
# phase2_5 and phase3 finals of the main chains (v9) and the tool-data chains (v10).
cd /work/main
. .venv/bin/activate
O=runs/probes72_13; TOK=runs/v9/data/tokenizer/bridge_cpu.model
for v in v9 v10; do for s in 2 3; do for ph in phase2_5 phase3; do
  python -m jaxlm.eval --checkpoint runs/$v/seed$s/models/${ph}_final --tokenizer $TOK --batch_size 8 \
    --suite passkey_heldout --lengths 100,128,256,512 --depths 0,0.5,1 --samples 24 --seed 7100 \
    --output $O/${v}_seed${s}_${ph}.json > $O/${v}_seed${s}_${ph}.log 2>&1
  echo "$v $s $ph $(date -u)" >> $O/progress.log
done; done; done
touch $O/finished
