"""A run's workdir, read below training, inference and interop: what lives where
(:mod:`tfm.run_files.layout`) and the newest intact checkpoint (:mod:`tfm.run_files.restore`).

Training writes a workdir (:mod:`tfm.training`), inference reads it (:mod:`tfm.inference`); both
import the names and the readers from here, never from each other.
"""
