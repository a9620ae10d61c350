"""Model sources: embedded catalogue, Hugging Face dirs and ids, GGUF files, nn.Modules."""
