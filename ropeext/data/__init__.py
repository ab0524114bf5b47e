"""Document sources, tokenizer training, packing layouts. No torch training code, no MLflow."""
