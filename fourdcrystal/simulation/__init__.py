"""`fourdcrystal simulate`: multislice CBED with labels (optics, engine, labels, shards, runner)."""
