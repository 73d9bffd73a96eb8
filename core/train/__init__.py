"""Retraining: the model as a PyTorch module, training data read batch by batch, gradual pruning with
fine-tuning, quantization-aware training, checkpoints."""
