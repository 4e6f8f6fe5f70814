"""`fourdcrystal train`: data over shards, augmentation, the training loop, the model card."""
