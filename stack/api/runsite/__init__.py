"""The start-up hook of `mpstack run`: this directory goes first on the
program's PYTHONPATH so that Python imports its `sitecustomize` (see
stack/api/run.py and stack/api/run_child.py)."""
