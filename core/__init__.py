"""The bottom layer: user errors, the typed-config machinery and the generic registry.

Everything else may import from here; nothing here imports from the rest of the project, so the
imports run one way: entry points -> engine -> models / losses / data -> core.
"""
