"""The Gradio web app. It renders what `decoding` returns and knows Gradio, never a model family.

Kept free of imports so that `python -m demo.make_examples` does not load Gradio.
"""
