"""Experiment configs (ml_collections): `default.py` holds every default, once; each other file
overrides a few fields of it. Load one with `python train.py --config=configs/X.py`."""
