"""After phase3's mix changed (its SFT quarter's tool tenth from the tool shard), the phase3 mix's
val split changed too: phase2_5's `b` eval (val on the phase3 mix, beside tools on training
schemas) is run again with the bridge's own command so that phase2_5 and phase3 are compared
on the same val documents. Old JSONs kept as *.before13."""
import os, shutil, subprocess, sys, time
sys.path.insert(0, "/work/main")
from experiments.bridge import cpu
for work in ("runs/v9", "runs/v10"):
  for seed in (2, 3):
    args = cpu.parse_args(["--workdir", work, "--seed", str(seed)])
    paths = cpu.Paths(args)
    for variant in ("main",) + (cpu.CONTROLS if work == "runs/v9" else ()):
      (name, cmd), = [c for c in cpu.eval_cmds(args, paths, "phase2_5", variant) if c[0] == "b"]
      out = paths.eval_json("phase2_5", variant, "b")
      if not os.path.exists(out + ".before13"):
        shutil.copy2(out, out + ".before13")
      t = time.time()
      subprocess.run([str(c) for c in cmd], check=True, cwd="/work/main",
                     stdout=open(out + ".reeval13.log", "w"), stderr=subprocess.STDOUT)
      print(work, seed, variant, f"{time.time() - t:.1f} s", flush=True)
