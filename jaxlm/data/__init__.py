"""The file formats the runtime reads: token shards, the tokenizer, the chat format.

`data_pipeline/` (the builders) writes these formats by importing this package; nothing in
`jaxlm/` imports `data_pipeline/`.
"""
