"""The command lines: ``dxai-train`` (``python train.py``) and ``dxai-infer`` (``python infer.py``)."""
