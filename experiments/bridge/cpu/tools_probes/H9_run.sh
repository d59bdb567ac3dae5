#!/bin/bash
# H9: H8 continued: 900 more steps on H8's shard from H8's final (fresh optimizer, seed 4 for
# the data order); 1,800 steps in all; tools evals at the end.
cd /work/main
. .venv/bin/activate
V=/work/main/runs/v9; P=/work/main/runs/h9; N=/work/main/runs/names
TOK=$V/data/tokenizer/bridge_cpu.model
S=/work/main/runs/h8/shard
python -m jaxlm.main --config=configs/phase2_5.py --config.workdir=$P/work --config.train_dir=$S/train --config.val_dir=$S/val --config.init_from=/work/main/runs/h8/final --config.final_dir=$P/final --config.tokenizer=$TOK --config.seed=4 --config.model.vocab_size=2048 --config.model.d_model=192 --config.model.n_layers=4 --config.model.n_heads=6 --config.model.n_kv_heads=2 --config.model.head_dim=32 --config.model.mlp_dim=512 --config.model.rope_theta=44000.0 --config.model.rope_scaling=none --config.model.rope_scaling_factor=1.0 --config.model.rope_original_max_len=128 --config.model.compute_dtype=float32 --config.model.attention=auto --config.model.remat=none --config.seq_len=512 --config.model.max_seq_len=512 --config.micro_batch_size=8 --config.grad_accum_steps=1 --config.total_opt_steps=900 --config.val_every_opt=300 --config.checkpoint_every_opt=300 --config.val_batches=4 --config.val_batch_size=4 --config.log_every=50 --config.optimizer.learning_rate=0.001 --config.optimizer.warmup_steps=15 --config.optimizer.schedule=cosine --config.optimizer.min_lr_ratio=0.1 --config.eval_during_training=False --config.tensorboard=False --config.keep_latest=100 > $P/H9.train.log 2>&1
for s in 900; do
 python -m jaxlm.eval --checkpoint $P/work/latest/$s --tokenizer $TOK --batch_size 8 --max_records 24 --suite tools --tools_eval /work/main/runs/h8/fit512_eval_generated.jsonl --output $P/H9_eval_generated_$s.json > $P/H9_eval_generated_$s.log 2>&1
 for kind in eval eval_seen; do
  python -m jaxlm.eval --checkpoint $P/work/latest/$s --tokenizer $TOK --batch_size 8 --max_records 24 --suite tools \
    --tools_eval $V/data/shards/tools/fit512_$kind.jsonl --output $P/H9_${kind}_$s.json > $P/H9_${kind}_$s.log 2>&1
 done
 echo "evals $s done $(date -u)" >> $P/progress.log
done
touch $P/H9.finished
