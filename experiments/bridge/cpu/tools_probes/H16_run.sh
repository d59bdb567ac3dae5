#!/bin/bash
# H16: H15's shard and settings (H14's tool data, 3.7M tokens, 900 steps of 8 x 512 at lr 1e-3)
# from H1c, the name-copy stage (1,800 steps of name records after seed 3's phase2), with no
# tool probe between them. H14 stood on H1c and ~22M tokens of probes H7-H13; H15 (the same
# data straight from phase2) stayed at 0%. Is the name stage what the data need, or the chain?
# Evals as H15's: 48 held-out, 47 training-schema and 24 fresh generated prompts at 300/600/900.
cd /work/main
. .venv/bin/activate
V=/work/main/runs/v9; H15=/work/main/runs/h15_seed3; P=/work/main/runs/h16
TOK=$V/data/tokenizer/bridge_cpu.model
mkdir -p $P
python -m jaxlm.main --config=configs/phase2_5.py --config.workdir=$P/work --config.train_dir=$H15/shard/train --config.val_dir=$H15/shard/val --config.init_from=/work/main/runs/names/models/H1c --config.final_dir=$P/final --config.tokenizer=$TOK --config.seed=3 --config.model.vocab_size=2048 --config.model.d_model=192 --config.model.n_layers=4 --config.model.n_heads=6 --config.model.n_kv_heads=2 --config.model.head_dim=32 --config.model.mlp_dim=512 --config.model.rope_theta=44000.0 --config.model.rope_scaling=none --config.model.rope_scaling_factor=1.0 --config.model.rope_original_max_len=128 --config.model.compute_dtype=float32 --config.model.attention=auto --config.model.remat=none --config.seq_len=512 --config.model.max_seq_len=512 --config.micro_batch_size=8 --config.grad_accum_steps=1 --config.total_opt_steps=900 --config.val_every_opt=300 --config.checkpoint_every_opt=300 --config.val_batches=4 --config.val_batch_size=4 --config.log_every=50 --config.optimizer.learning_rate=0.001 --config.optimizer.warmup_steps=15 --config.optimizer.schedule=cosine --config.optimizer.min_lr_ratio=0.1 --config.eval_during_training=False --config.tensorboard=False --config.keep_latest=100 > $P/train.log 2>&1
for s in 300 600 900; do
 python -m jaxlm.eval --checkpoint $P/work/latest/$s --tokenizer $TOK --batch_size 8 --max_records 24 --suite tools --tools_eval $H15/fit512_eval_generated.jsonl --output $P/H16_eval_generated_$s.json > $P/H16_eval_generated_$s.log 2>&1
 for kind in eval eval_seen; do
  python -m jaxlm.eval --checkpoint $P/work/latest/$s --tokenizer $TOK --batch_size 8 --max_records 48 --suite tools \
    --tools_eval $H15/fit512_${kind}48.jsonl --output $P/H16_${kind}48_$s.json > $P/H16_${kind}48_$s.log 2>&1
 done
 echo "evals $s done $(date -u)" >> $P/progress.log
done
touch $P/finished
