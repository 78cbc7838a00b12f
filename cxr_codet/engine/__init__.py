"""Training loop pieces: the trainer used by tools/train_net.py."""
