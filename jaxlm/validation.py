"""Validation loss: the one definition of the loss the project reports.

The trainer's validation, `jaxlm.eval --suite val` and the experiments all go through
these functions, so one checkpoint has one val loss per source:

  token_nll(model, params, batch)    per-token NLL [B, T] of a packed batch (the training
                                     loss uses it too)
  loss_sums(params, batch, n, model) sums of w * nll and w, in total and per source
  losses_from_sums(sums, sources)    {"loss": ..., "loss/<source>": ...}
  validation_loss(...)               the above over a list of batches on one device

A packed window holds several documents. With `cross_document_attention=True` the model
reads the window as one sequence (positions 0..T-1, no document mask), exactly as it was
trained; with False each document is masked off and its positions restart at 0.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp

from jaxlm import model as model_lib


def token_nll(model, params, batch):
  """Per-token negative log-likelihood [B, T] (chunked: no full [B, T, V] logits)."""
  if model.config.cross_document_attention:
    positions = segment_ids = None
  else:
    positions, segment_ids = batch["positions"], batch["segment_ids"]
  hidden = model.apply({"params": params}, batch["inputs"], positions=positions,
                       segment_ids=segment_ids, return_hidden=True)
  head = model_lib.lm_head_matrix(params, model.config)
  return model_lib.token_nll(hidden, head, batch["targets"])


def loss_sums(params, batch, num_sources, *, model):
  """Sums of w * nll and w over one batch, in total and per source (jit-able)."""
  nll = token_nll(model, params, batch)
  weights = batch["loss_weights"].astype(jnp.float32)
  weighted = jnp.where(weights > 0, weights * nll, 0.0)  # a masked inf contributes 0
  out = {"nll_sum": jnp.sum(weighted), "weight_sum": jnp.sum(weights)}
  if num_sources:
    # Unknown sources (-1) go to an extra bucket that is dropped.
    source = jnp.where(batch["source_ids"] < 0, num_sources, batch["source_ids"]).reshape(-1)
    out["nll_by_source"] = jax.ops.segment_sum(
        weighted.reshape(-1), source, num_segments=num_sources + 1)[:num_sources]
    out["weight_by_source"] = jax.ops.segment_sum(
        weights.reshape(-1), source, num_segments=num_sources + 1)[:num_sources]
  return out


def losses_from_sums(sums: Sequence[dict], sources: Sequence[str]) -> dict[str, float]:
  """Host-side reduction of per-batch `loss_sums` into mean losses (per source too)."""
  sums = jax.device_get(list(sums))
  weight = sum(float(s["weight_sum"]) for s in sums)
  result = {"loss": sum(float(s["nll_sum"]) for s in sums) / max(weight, 1e-8)}
  for i, name in enumerate(sources):
    source_weight = sum(float(s["weight_by_source"][i]) for s in sums)
    if source_weight > 0:
      result[f"loss/{name}"] = sum(float(s["nll_by_source"][i]) for s in sums) / source_weight
  return result


def validation_loss(params, model_config, batches: Sequence[dict[str, Any]],
                    sources: Sequence[str]) -> dict[str, float]:
  """Mean val loss (and per source) of `batches` on one device: what the trainer logs."""
  model = model_lib.Transformer(model_config)
  step = jax.jit(lambda p, b: loss_sums(p, b, len(sources), model=model))
  fields = ("inputs", "targets", "loss_weights", "segment_ids", "positions", "source_ids")
  return losses_from_sums([step(params, {k: b[k] for k in fields}) for b in batches], sources)
