#!/bin/bash
# 72 held-out passkey probes a length (24 a depth at 0, 0.5, 1; fresh keys, seed 7100) for the
# phase2_5 and phase3 finals of the main chains (runs/v9, with their three phase2_5 controls)
# and of the tool-data chains (runs/v10, ../tools_in_bridge/). ~10 s a checkpoint.
cd /work/main
. .venv/bin/activate
O=runs/probes72_13; TOK=runs/v9/data/tokenizer/bridge_cpu.model
eval72() {  # checkpoint output
  python -m jaxlm.eval --checkpoint "$1" --tokenizer $TOK --batch_size 8 \
    --suite passkey_heldout --lengths 100,128,256,512 --depths 0,0.5,1 --samples 24 --seed 7100 \
    --output "$2" > "${2%.json}.log" 2>&1
}
for v in v9 v10; do for s in 2 3; do for ph in phase2_5 phase3; do
  eval72 runs/$v/seed$s/models/${ph}_final $O/${v}_seed${s}_${ph}.json
done; done; done
for s in 2 3; do for c in no_rope linear_pi replay_for_longctx; do
  eval72 runs/v9/seed$s/models/phase2_5_${c}_final $O/v9_seed${s}_phase2_5_$c.json
done; done
