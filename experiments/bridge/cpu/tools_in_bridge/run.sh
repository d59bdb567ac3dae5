#!/bin/bash
# v10: the bridge's tool quarter built with probe H14's tool_synth flags; phase2_5 and phase3
# retrained from v9's phase2 (data and earlier checkpoints copied from runs/v9).
cd /work/main
. .venv/bin/activate
F="--tools_generated_share 0.5 --tools_generated_apart_share 0.5 --tools_generated_id_share 0.3 --tools_rename_share 1.0 --tools_rename_words pieces"
for s in 3 2; do
  python -m experiments.bridge.cpu --workdir runs/v10 --out_dir runs/v10/out --seed $s --start_at phase2_5 $F > runs/v10/seed$s.log 2>&1
  echo "seed $s rc $? $(date -u)" >> runs/v10/progress.log
done
touch runs/v10/finished
