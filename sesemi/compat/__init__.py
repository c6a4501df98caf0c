"""The private APIs of libraries that sesemi cannot avoid, one module per library, each use with its reason.

``tests/compat/test_<module>.py`` (one per module here) exercise every function here against the installed versions,
so an upstream change fails there, loudly and by name, instead of deep inside a run or a sweep.
"""
