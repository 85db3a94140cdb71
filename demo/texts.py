"""What the app says to visitors, in one place: the page's prose, its notices and the messages of a run.

(The rendered traces' own words are in `demo.render`, the shapes-world lab's in `demo.shapes_lab`.)
"""

TITLE = "Contrastive decoding lab"

HEADER = """# Contrastive decoding lab
Ask a question about an image and compare, side by side, the model's plain answer with its answer under a
training-free contrastive decoding method against hallucination. Both answers come from the same batched run.
Colour the tokens by how much the image supports them, how far the method moved them, or how confident the model was;
click a token to see where the model looked and which candidates each branch preferred."""

TINY_NOTICE = (
    "⚠️ **Untrained demo model.** This server runs a tiny model with random weights, so that the app starts with "
    "nothing to download: its answers are gibberish and its heatmaps mean nothing. Every control works the same with "
    "a real model: start the app with `--model llava-hf/llava-1.5-7b-hf` (or set `CD_MODELS`)."
)

# Why the page opens in sampling with the embedded model; the figures are the lab's (README, "the lab":
# `python -m eval.shapes_world.lab --n 200 --seeds 3`, answers changed against the baseline over the three splits).
EMBEDDED_DECODING = (
    "It opens in **sampling** (T = 1): greedy, APC-only and most methods change none of its answers (a plausibility "
    "cut keeps the top token); sampled, each changes 1–8 in 100 (README, the lab)."
)

EMBEDDED_NOTICE = (
    "ℹ️ **Embedded shapes-world model**: a 1.3 M-parameter LLaVA trained only on 48 × 48 pictures of coloured shapes, "
    "in a closed vocabulary (the shapes gallery's questions: \"is there a star in the image ?\"); on photos its "
    "answers mean nothing (serve a real LVLM with `--model llava-hf/llava-1.5-7b-hf` or `CD_MODELS`). "
    + EMBEDDED_DECODING
)

NOT_A_SCENE_NOTICE = (
    "This picture is not a shapes-world scene: the embedded model only knows its 48 px world of coloured shapes, so "
    "its answers here mean nothing. Press 'New shapes-world scene' or pick a shapes example, or serve a real LVLM."
)

FALLBACK_NOTICE = "⚠️ {notice}"  # the operator's model failed to load at start

IMAGE_LIMITS = (
    "Images over {megapixels:g} megapixels are refused; larger sides than {max_side} px are scaled down before the "
    "model sees them."
)

BASELINE_HEADING = "### Baseline: plain decoding"
METHOD_HEADING = "### {title}"
BASELINE_EMPTY = "The plain answer goes here."
METHOD_EMPTY = "The method's answer goes here."
CONTROL_HEADING = "### {title}"  # a control's title says "(control)"
CONTROL_EMPTY = "The control's answer goes here."
NO_CONTROL = "none"  # the control menu's first choice: two panels
CONTROL_INFO = (
    "A control decoded in the same run, in a third panel: it tells the method's effect from its artifacts (the "
    "plausibility cut alone, a push toward \"yes\")."
)
PANEL_WAITING = "…"

# ---- a run ----------------------------------------------------------------------------------------------------------
LOADING_MODEL = "loading the model"
REFUSED_TITLE = "Cannot run this comparison"
MODEL_UNAVAILABLE_TITLE = "Model unavailable"
WITH_NOTICE = "{status} ⚠️ {notice}"
STOPPED_IN_PRE_STEP = "Stopped before the first token (during the method's pre-step)."
STOPPED_WHILE_LOADING = "Stopped before the first token (while the model loaded)."
STOPPING = "Stopping…"
NOTHING_TO_STOP = "No comparison is running."
# What Stop says, and the run's status, when the run it stops still waits in the queue.
CANCELLING_WAITING = "Cancelled: the comparison waiting in the queue will not run."
CANCELLED_WAITING = "Stopped before it started: Stop was pressed while it waited in the queue."
OUT_OF_MEMORY_TITLE = "Out of memory"
OUT_OF_MEMORY = (
    "The model ran out of memory during this comparison, so it was stopped and its memory freed. "
    "Try again with fewer new tokens, a simpler method, or when the server is less busy."
)
TOO_MANY_NEW_TOKENS = (
    "max new tokens is {asked}, but this model takes at most {limit} here: its context is {context} tokens, and the "
    "picture's tokens and a question of up to {room} tokens come first. Lower max new tokens to {limit} or less."
)
RUN_FAILED_TITLE = "Run failed"
# The error's own text stays in the server's log (it may name the server's paths or its objects).
RUN_FAILED = "The model failed during the run ({kind}); the details are in the server's log. Please try again."
MALFORMED_REQUEST_TITLE = "Request refused"
MALFORMED_REQUEST = (
    "This request is not one the page sends: an input value is missing or malformed, or a file was not uploaded to "
    "this app. Nothing was run. Reload the page, or check the call against the API page, and try again."
)

# Under each method's and control's sliders: where the method, and each default, come from (the registry's sources).
METHOD_SOURCE = "Source: {source}"
PARAM_INFO = "{help} Default: {source}."
