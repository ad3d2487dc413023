"""Data, not code: attribute schemas, text inputs, model configs, recipes and ablation variants (JSON).

A package only so that the files ship inside the wheel and load with importlib.resources.
"""
