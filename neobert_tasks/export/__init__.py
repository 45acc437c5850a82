"""Exports: a run's model as a self-contained Hugging Face folder (remote code, tokenizer, card,
sentence-transformers files), optionally with ONNX or a torch.export program, and its upload to the hub."""
