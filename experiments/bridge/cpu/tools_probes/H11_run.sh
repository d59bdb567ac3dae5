#!/bin/bash
# H11: every synthetic conversation offers generated functions, half of whose names are spelt
# apart from the request (--generated_apart_share 0.5), fixed words; glaive/hermes fixtures as
# before; 3.7M tokens, 900 steps from H9 (which reads generated schemas); evals at 300/600/900.
cd /work/main
. .venv/bin/activate
V=/work/main/runs/v9; P=/work/main/runs/h11
TOK=$V/data/tokenizer/bridge_cpu.model
S=$P/shard
python -m data_pipeline.tool_synth --out_dir $S --seq_len 512 \
  --glaive tests/fixtures/glaive_function_calling_v2_sample.json \
  --hermes tests/fixtures/hermes_function_calling_v1_sample.json \
  --target_train_tokens 3800000 --target_val_tokens 16384 --eval_examples 96 \
  --generated_share 1.0 --generated_apart_share 0.5 --num_workers 2 --tokenizer $TOK --quiet > $P/shard.log 2>&1
python - <<'PY'
import json
from jaxlm.data import chat_format
from jaxlm.data.tokenizer import load_tokenizer
tok = load_tokenizer("/work/main/runs/v9/data/tokenizer/bridge_cpu.model")
rows = [json.loads(l) for l in open("/work/main/runs/h11/shard/eval_generated.jsonl")]
keep = [r for r in rows if len(chat_format.encode_prompt(tok, r["messages"], r.get("tools"))) <= 512 - 128][:24]
open("/work/main/runs/h11/fit512_eval_generated.jsonl", "w").write("".join(json.dumps(r) + "\n" for r in keep))
PY
echo "shard done $(date -u)" >> $P/progress.log
python -m jaxlm.main --config=configs/phase2_5.py --config.workdir=$P/work --config.train_dir=$S/train --config.val_dir=$S/val --config.init_from=/work/main/runs/h9/final --config.final_dir=$P/final --config.tokenizer=$TOK --config.seed=5 --config.model.vocab_size=2048 --config.model.d_model=192 --config.model.n_layers=4 --config.model.n_heads=6 --config.model.n_kv_heads=2 --config.model.head_dim=32 --config.model.mlp_dim=512 --config.model.rope_theta=44000.0 --config.model.rope_scaling=none --config.model.rope_scaling_factor=1.0 --config.model.rope_original_max_len=128 --config.model.compute_dtype=float32 --config.model.attention=auto --config.model.remat=none --config.seq_len=512 --config.model.max_seq_len=512 --config.micro_batch_size=8 --config.grad_accum_steps=1 --config.total_opt_steps=900 --config.val_every_opt=300 --config.checkpoint_every_opt=300 --config.val_batches=4 --config.val_batch_size=4 --config.log_every=50 --config.optimizer.learning_rate=0.001 --config.optimizer.warmup_steps=15 --config.optimizer.schedule=cosine --config.optimizer.min_lr_ratio=0.1 --config.eval_during_training=False --config.tensorboard=False --config.keep_latest=100 > $P/H11.train.log 2>&1
for s in 300 600 900; do
 python -m jaxlm.eval --checkpoint $P/work/latest/$s --tokenizer $TOK --batch_size 8 --max_records 24 --suite tools --tools_eval $P/fit512_eval_generated.jsonl --output $P/H11_eval_generated_$s.json > $P/H11_eval_generated_$s.log 2>&1
 for kind in eval eval_seen; do
  python -m jaxlm.eval --checkpoint $P/work/latest/$s --tokenizer $TOK --batch_size 8 --max_records 24 --suite tools \
    --tools_eval $V/data/shards/tools/fit512_$kind.jsonl --output $P/H11_${kind}_$s.json > $P/H11_${kind}_$s.log 2>&1
 done
 echo "evals $s done $(date -u)" >> $P/progress.log
done
touch $P/H11.finished
