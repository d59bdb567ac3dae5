r"""Chunked cross-entropy, forward + backward: jaxlm's custom backward vs plain autodiff.

  python -m experiments.bench_loss [--batch 2 --seq_len 2048 --d_model 512 --vocab 16384]

`jaxlm.model.token_nll` recomputes each chunk's logits in its own backward pass and feeds
the two backward matmuls in the compute dtype, accumulating the head gradient in float32.
The reference here is what autodiff does with the same chunking (jax.checkpoint per chunk,
float32 logits): its backward matmuls mix a float32 cotangent with bf16 operands, and the
head gradient is summed over chunks in bf16. Prints median step time of each and the
largest difference of the head gradients.
"""

import argparse
import time

import jax
import jax.numpy as jnp

from jaxlm import model as model_lib


def autodiff_token_nll(hidden, head, targets, chunk_size):
  b, t, d = hidden.shape
  chunk = min(chunk_size, t)
  head = head.astype(hidden.dtype)
  hidden_chunks = hidden.reshape(b, t // chunk, chunk, d).swapaxes(0, 1)
  target_chunks = targets.reshape(b, t // chunk, chunk).swapaxes(0, 1)

  @jax.checkpoint
  def one_chunk(h, tgt):
    logits = jnp.einsum("bcd,dv->bcv", h, head, preferred_element_type=jnp.float32)
    return model_lib.token_nll_from_logits(logits, tgt)

  nll = jax.lax.map(lambda a: one_chunk(*a), (hidden_chunks, target_chunks))
  return nll.swapaxes(0, 1).reshape(b, t)


def median_ms(fn, *args, repeats=5):
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return sorted(times)[len(times) // 2] * 1e3


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--batch", type=int, default=2)
  parser.add_argument("--seq_len", type=int, default=2048)
  parser.add_argument("--d_model", type=int, default=512)
  parser.add_argument("--vocab", type=int, default=16384)
  parser.add_argument("--chunk", type=int, default=1024)
  args = parser.parse_args()
  key = jax.random.PRNGKey(0)
  hidden = (jax.random.normal(key, (args.batch, args.seq_len, args.d_model)) * 0.5
            ).astype(jnp.bfloat16)
  head = jax.random.normal(key, (args.d_model, args.vocab)) * 0.02
  targets = jax.random.randint(key, (args.batch, args.seq_len), 0, args.vocab)
  grads = {}
  print(f"device {jax.devices()[0].device_kind}; B={args.batch} T={args.seq_len} "
        f"D={args.d_model} V={args.vocab} chunk={args.chunk}; hidden bf16, head float32")
  for name, nll_fn in (("autodiff (reference)", autodiff_token_nll),
                       ("jaxlm token_nll", model_lib.token_nll)):
    grad = jax.jit(jax.grad(lambda h, w, f=nll_fn: f(h, w, targets, args.chunk).mean(),
                            argnums=(0, 1)))
    grads[name] = grad(hidden, head)[1]
    print(f"  {name:22s} {median_ms(grad, hidden, head):9.1f} ms fwd+bwd")
  a, b = grads.values()
  print(f"  head gradient max |difference|: {float(jnp.max(jnp.abs(a - b))):.2e}")


if __name__ == "__main__":
  main()
