"""The shapes world's evaluation: what scores the embedded model (``assets/shapes-llava``) and writes its benchmark.

The world itself (scenes, ground truth, grading) and the model's build and training stay in ``models.shapes_world``;
what runs the model to score it, or runs decoding, lives here, so that ``models`` never imports ``decoding``.

evaluate.py   ``python -m eval.shapes_world.evaluate``: every target of the model card, measured with greedy decoding
benchmark.py  ``python -m eval.shapes_world.benchmark``: the held-out benchmark in POPE, MME and CHAIR files, and the
              ``python -m eval`` commands that score it
"""
