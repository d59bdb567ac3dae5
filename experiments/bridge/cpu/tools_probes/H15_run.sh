#!/bin/bash
# H15_run.sh SEED [INIT NAME]
# H15: probe H14's tool data (fresh shard, builder --seed 2) straight from the bridge's own
# phase2 final (bridge seed $1, default 3), no earlier tool probe: 3.7M tokens, 900 steps of
# 8 x 512 at lr 1e-3, the phase2_5 model settings; tools evals at 300/600/900 on the 48
# fitting held-out prompts (the bridge's 24 are their first 24), 47 training-schema prompts
# and 24 fresh generated-function prompts. Does the chain H7-H14 (~30M tool tokens before
# H14) matter, or does one probe's worth of these data do it from phase2?
# H16: `H15_run.sh 3 /work/main/runs/names/models/H1c H16`: H15's shard, prompts and settings
# from H1c, the name-copy stage (1,800 steps of name records after seed 3's phase2), with no
# tool probe between: is the name stage what these data need, or the whole chain?
SEED=${1:-3}
INIT=${2:-/work/main/runs/v9/seed$SEED/models/phase2_final}
NAME=${3:-H15}
cd /work/main
. .venv/bin/activate
V=/work/main/runs/v9; H15=/work/main/runs/h15_seed$SEED; P=/work/main/runs/${NAME,,}_seed$SEED
TOK=$V/data/tokenizer/bridge_cpu.model
S=$H15/shard
mkdir -p $P
if [ ! -f $H15/fit512_eval_seen48.jsonl ]; then  # the shard and prompts, once a seed
python -m data_pipeline.tool_synth --out_dir $S --seq_len 512 \
  --glaive tests/fixtures/glaive_function_calling_v2_sample.json \
  --hermes tests/fixtures/hermes_function_calling_v1_sample.json \
  --target_train_tokens 3800000 --target_val_tokens 16384 --eval_examples 96 --seed 2 \
  --generated_share 0.5 --generated_apart_share 0.5 --generated_id_share 0.3 \
  --rename_share 1.0 --rename_words pieces --num_workers 2 --tokenizer $TOK --quiet > $H15/shard.log 2>&1
python - "$H15" <<'PY'
import json, sys
from jaxlm.data import chat_format
from jaxlm.data.tokenizer import load_tokenizer
P = sys.argv[1]
tok = load_tokenizer("/work/main/runs/v9/data/tokenizer/bridge_cpu.model")
rows = [json.loads(l) for l in open(f"{P}/shard/eval_generated.jsonl")]
keep = [r for r in rows if len(chat_format.encode_prompt(tok, r["messages"], r.get("tools"))) <= 512 - 128][:24]
open(f"{P}/fit512_eval_generated.jsonl", "w").write("".join(json.dumps(r) + "\n" for r in keep))
for kind in ("eval", "eval_seen"):  # the bridge's tool shard's prompts, 48 that fit (it asks 24)
  rows = [json.loads(l) for l in open(f"/work/main/runs/v9/data/shards/tools/{kind}.jsonl")]
  keep = [r for r in rows if len(chat_format.encode_prompt(tok, r["messages"], r.get("tools"))) <= 512 - 128][:48]
  open(f"{P}/fit512_{kind}48.jsonl", "w").write("".join(json.dumps(r) + "\n" for r in keep))
PY
echo "shard done $(date -u)" >> $H15/progress.log
fi
python -m jaxlm.main --config=configs/phase2_5.py --config.workdir=$P/work --config.train_dir=$S/train --config.val_dir=$S/val --config.init_from=$INIT --config.final_dir=$P/final --config.tokenizer=$TOK --config.seed=$SEED --config.model.vocab_size=2048 --config.model.d_model=192 --config.model.n_layers=4 --config.model.n_heads=6 --config.model.n_kv_heads=2 --config.model.head_dim=32 --config.model.mlp_dim=512 --config.model.rope_theta=44000.0 --config.model.rope_scaling=none --config.model.rope_scaling_factor=1.0 --config.model.rope_original_max_len=128 --config.model.compute_dtype=float32 --config.model.attention=auto --config.model.remat=none --config.seq_len=512 --config.model.max_seq_len=512 --config.micro_batch_size=8 --config.grad_accum_steps=1 --config.total_opt_steps=900 --config.val_every_opt=300 --config.checkpoint_every_opt=300 --config.val_batches=4 --config.val_batch_size=4 --config.log_every=50 --config.optimizer.learning_rate=0.001 --config.optimizer.warmup_steps=15 --config.optimizer.schedule=cosine --config.optimizer.min_lr_ratio=0.1 --config.eval_during_training=False --config.tensorboard=False --config.keep_latest=100 > $P/train.log 2>&1
for s in 300 600 900; do
 python -m jaxlm.eval --checkpoint $P/work/latest/$s --tokenizer $TOK --batch_size 8 --max_records 24 --suite tools --tools_eval $H15/fit512_eval_generated.jsonl --output $P/${NAME}_eval_generated_$s.json > $P/${NAME}_eval_generated_$s.log 2>&1
 for kind in eval eval_seen; do
  python -m jaxlm.eval --checkpoint $P/work/latest/$s --tokenizer $TOK --batch_size 8 --max_records 48 --suite tools \
    --tools_eval $H15/fit512_${kind}48.jsonl --output $P/${NAME}_${kind}48_$s.json > $P/${NAME}_${kind}48_$s.log 2>&1
 done
 echo "evals $s done $(date -u)" >> $P/progress.log
done
touch $P/finished
