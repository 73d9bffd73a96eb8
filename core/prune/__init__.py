"""Pruning on ONNX weights: unstructured and N:M masks (`unstructured.py`), and structured channel
removal with dependency tracking across coupled layers (`channel_groups.py`, `channel_plan.py`,
`channel_apply.py`)."""
