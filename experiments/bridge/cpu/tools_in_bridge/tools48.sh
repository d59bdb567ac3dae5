#!/bin/bash
# Tool evals on every fitting held-out prompt (48, 34-35 want a call) and training-schema
# prompt (47), for the phase2_5 and phase3 finals of v9 (bridge's default tool data) and v10
# (probe H14's tool data); the bridge's own evals take the first 24 of each. The phase3
# finals were evaluated again (same command) after phase3 was retrained.
cd /work/main
. .venv/bin/activate
# T holds this folder's tools48/fit512_eval.jsonl and fit512_eval_seen.jsonl
T=runs/v10/tools48; TOK=runs/v10/data/tokenizer/bridge_cpu.model
for v in v9 v10; do for s in 2 3; do for ph in phase2_5 phase3; do
  for kind in eval eval_seen; do
    python -m jaxlm.eval --checkpoint runs/$v/seed$s/models/${ph}_final --tokenizer $TOK --batch_size 8 \
      --max_records 48 --suite tools --tools_eval $T/fit512_$kind.jsonl \
      --output $T/${v}_seed${s}_${ph}_$kind.json > $T/${v}_seed${s}_${ph}_$kind.log 2>&1
  done
done; done; done
touch $T/finished
