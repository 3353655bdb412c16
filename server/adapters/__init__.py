"""Personal concepts: low-rank adapters trained on the user's images, applied as bends.

``lora``: the file format and the per-row update; ``train``: ``bendbridge adapt``.
"""
