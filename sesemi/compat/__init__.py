"""The private APIs of libraries that sesemi cannot avoid, one module per library, each use with its reason.

``tests/test_compat_lightning.py``, ``tests/sweep/test_compat_sweep.py``, ``tests/cluster/test_compat_cluster.py`` and
``tests/test_precision.py`` (torch) exercise every function here against the installed versions, so an upstream
change fails there, loudly and by name, instead of deep inside a run or a sweep.
"""
