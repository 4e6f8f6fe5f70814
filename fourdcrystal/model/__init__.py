"""The FCU-Net (fcunet.py): one readable file; training lives in fourdcrystal.training."""
