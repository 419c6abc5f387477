"""The command-line scripts, importable as ``scripts.<name>`` once the project is installed (``pip install -e .``)."""
