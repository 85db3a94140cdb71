"""The shapes world's text-only amateur for CD and LCD: a tiny Llama that reads the expert's prompt with the image
removed and learns the language prior of the stage-2 questions and answers.

    python -m eval.amateur_train --model assets/shapes-llava --steps 3000 --work runs/amateur \
        --out assets/shapes-llava/amateur

LCD (Manevich & Tsarfaty, Findings ACL 2024) subtracts the LVLM's own base language model fed the same text without
the image tokens (avshalomman/lcd @30f8bbf, ``lcd.py`` L46–52); the shapes-world LLaVA has no such model, so this one
is trained from scratch on what stage 2 asked (``models.shapes_world.train.stage2_examples``: the biased world, the
question mix, the realism rule that rarely asks about an absent partner) with every image token taken out of the
expert's chat-template prompt: ``<s> USER: is there a square in the image ? ASSISTANT: yes </s>``. Without the
picture the best it can do is the world's prior: answer base rates per question (the absent partner's "yes", the
colour priors), the kinds a description tends to list. The tokenizer is the expert's own (57 words), saved with it.

Seeded (the data of step ``i`` depend only on ``--seed`` and ``i``; scene seeds from 40,000,000, apart from every
other set), resumable (the training state is written every ``--save-every`` steps to ``--work`` and resumed from
there), one CPU thread by default. Writes the model (fp16, ``save_pretrained``), the tokenizer and ``amateur.json``
(settings, held-out figures) under ``--out`` (default: ``amateur/`` beside the model, where ``decoding.amateur``
finds it).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys

import torch
import torch.nn.functional as F

from models.shapes_world import build, world
from models.shapes_world.train import Progress, lr_at, resume, save_atomically

TRAIN_SEED_BASE = 40_000_000  # apart from training (10-20 M), DCD (30-31 M), evaluation (1e9 on), the app (1.5e9 on)
HELD_OUT_SEED_BASE = 41_000_000
FOLDER = "amateur"
SETTINGS = ("model", "steps", "batch", "lr", "warmup", "seed", "partner_question_rate", "hidden", "layers", "heads",
            "intermediate", "held_out")


def text_examples(seed_base: int, step: int, batch: int, seed: int, partner_question_rate: float):
    """``batch`` (family, question, answer) triples of one step, deterministic in seed and step: stage 2's question
    mix on the biased world (no picture is rendered: the amateur never sees one)."""
    rng = random.Random(f"amateur {seed} {step}")
    examples = []
    for i in range(batch):
        scene = world.sample_scene(seed_base + seed * 1_000_003 + step * batch + i, world.BIASED)
        question = world.sample_training_question(scene, rng, world.BIASED,
                                                  partner_question_rate=partner_question_rate)
        examples.append((question.family, question.text, question.answer))
    return examples


class TextEncoder:
    """The expert's chat-template prompt ids (from ``build.Encoder``: the real processor path) with every image token
    removed, as LCD feeds its language model; answers and EOS after it."""

    def __init__(self, processor):
        self.encoder = build.Encoder(processor)
        self.image_id = processor.tokenizer.convert_tokens_to_ids("<image>")
        self.pad_id = processor.tokenizer.pad_token_id

    def prompt_ids(self, question: str) -> list[int]:
        return [t for t in self.encoder.prompt_ids(question) if t != self.image_id]

    def batch(self, questions: list[str], answers: list[str]) -> dict:
        prompts = [self.prompt_ids(q) for q in questions]
        replies = [self.encoder.answer_ids(a) for a in answers]
        width = max(len(p) + len(r) for p, r in zip(prompts, replies))
        input_ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        targets = torch.full((len(prompts), width), -100, dtype=torch.long)
        for i, (p, r) in enumerate(zip(prompts, replies)):
            input_ids[i, : len(p) + len(r)] = torch.tensor(p + r)
            targets[i, len(p) - 1: len(p) + len(r) - 1] = torch.tensor(r)
        return {"input_ids": input_ids, "targets": targets}


def per_example_nll(model, batch: dict) -> torch.Tensor:
    """Each example's mean NLL over its answer tokens (a one-word answer weighs as much as a description)."""
    logits = model(input_ids=batch["input_ids"]).logits
    targets = batch["targets"]
    per_token = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=-100,
                                reduction="none").view(targets.shape)
    answered = (targets != -100).float()
    return (per_token * answered).sum(1) / answered.sum(1).clamp(min=1)


def build_amateur(tokenizer, args):
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=args.hidden, intermediate_size=args.intermediate,
                         num_hidden_layers=args.layers, num_attention_heads=args.heads,
                         num_key_value_heads=args.heads, max_position_embeddings=256,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(bos_token_id=tokenizer.bos_token_id,
                                               eos_token_id=tokenizer.eos_token_id,
                                               pad_token_id=tokenizer.pad_token_id)
    return model


@torch.no_grad()
def held_out_figures(model, text: TextEncoder, tokenizer, args) -> dict:
    """On held-out scenes: the mean answer NLL per question family, and for the yes/no families the amateur's mean
    p("yes") beside the share of "yes" answers (a language prior should match the base rates it cannot see past)."""
    model.eval()
    examples = text_examples(HELD_OUT_SEED_BASE, 0, args.held_out, args.seed, args.partner_question_rate)
    yes = tokenizer.convert_tokens_to_ids("yes")
    figures: dict[str, dict] = {}
    for family in sorted({f for f, _, _ in examples}):
        chosen = [(q, a) for f, q, a in examples if f == family]
        batch = text.batch([q for q, _ in chosen], [a for _, a in chosen])
        nll = per_example_nll(model, batch)
        entry = {"n": len(chosen), "answer_nll": round(float(nll.mean()), 4)}
        if family != "description":
            logits = model(input_ids=batch["input_ids"]).logits
            first = (batch["targets"] != -100).float().argmax(1)
            p_yes = logits[torch.arange(len(chosen)), first].float().softmax(-1)[:, yes]
            entry["mean_p_yes"] = round(float(p_yes.mean()), 4)
            entry["share_yes"] = round(sum(a == "yes" for _, a in chosen) / len(chosen), 4)
        figures[family] = entry
    model.train()
    return figures


@torch.no_grad()
def prior_probe(model, text: TextEncoder, tokenizer) -> dict:
    """The amateur's p("yes") to every kind's existence question and to the colour priors' questions (the biased
    world's circle is red, star yellow, diamond blue 80 % of the time), beside a colour it has no prior for: what the
    language prior it learnt says without a picture."""
    yes = tokenizer.convert_tokens_to_ids("yes")
    questions = {f"is there a {kind} in the image ?": kind for kind in world.KINDS}
    questions.update({f"is the {kind} {colour} ?": f"{kind} {colour}" for kind, colour in
                      (("circle", "red"), ("circle", "green"), ("star", "yellow"), ("star", "blue"),
                       ("diamond", "blue"), ("diamond", "red"))})
    was_training = model.training
    model.eval()
    out = {}
    for question, name in questions.items():
        ids = torch.tensor([text.prompt_ids(question)])
        out[name] = round(float(model(input_ids=ids).logits[0, -1].float().softmax(-1)[yes]), 4)
    model.train(was_training)
    return out


def train(args) -> dict:
    torch.set_num_threads(args.threads)
    processor = build.build_processor()
    tokenizer = processor.tokenizer
    text = TextEncoder(processor)
    model = build_amateur(tokenizer, args)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01, betas=(0.9, 0.98))
    state_path = os.path.join(args.work, "amateur_state.pt")
    start = resume(state_path, "the amateur", model=model, optimizer=optimizer)
    smooth = torch.load(state_path, weights_only=True).get("loss") if start else None
    model.train()
    end = args.stop_at or args.steps
    progress = Progress("amateur", end, start, every=args.log_every)
    for step in range(start, end):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, args.steps, args.lr, args.warmup)
        examples = text_examples(TRAIN_SEED_BASE, step, args.batch, args.seed, args.partner_question_rate)
        loss = per_example_nll(model, text.batch([q for _, q, _ in examples], [a for _, _, a in examples])).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        smooth = loss.item() if smooth is None else 0.95 * smooth + 0.05 * loss.item()
        progress.update(step, loss=smooth)
        if (step + 1) % args.save_every == 0 or step + 1 == end:
            save_atomically({"step": step + 1, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                             "loss": smooth}, state_path)
    model.eval()
    report = {"method": "text-only amateur for CD / LCD (the expert's prompt with its image tokens removed)",
              "settings": {key: getattr(args, key) for key in SETTINGS},
              "parameters": sum(p.numel() for p in model.parameters()),
              "final_training_loss": None if smooth is None else round(smooth, 4),
              "held_out": held_out_figures(model, text, tokenizer, args),
              "p_yes_without_picture": prior_probe(model, text, tokenizer)}
    os.makedirs(args.out, exist_ok=True)
    model.to(torch.float16).save_pretrained(args.out)
    tokenizer.save_pretrained(args.out)
    with open(os.path.join(args.out, "amateur.json"), "w") as handle:
        json.dump(report, handle, indent=2)
    print(f"saved {args.out}", file=sys.stderr, flush=True)
    return report


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="assets/shapes-llava", help="the expert whose tokenizer and prompt it "
                                                                       "shares (the shapes-world LLaVA)")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--stop-at", type=int, default=None,
                        help="end this run at this step of the --steps schedule (a later run resumes from --work)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--partner-question-rate", type=float, default=0.25,
                        help="how often an absent partner is asked about (the shipped expert's last runs: 0.25-0.3)")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--intermediate", type=int, default=160)
    parser.add_argument("--held-out", type=int, default=2000, help="held-out questions for amateur.json")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--work", default="runs/amateur", help="where the training state is written and resumed")
    parser.add_argument("--out", default=None, help="default: amateur/ beside --model")
    parser.add_argument("--save-every", type=int, default=200)
    parser.add_argument("--log-every", type=int, default=50)
    args = parser.parse_args(argv)
    if args.stop_at is not None and not 0 < args.stop_at <= args.steps:
        parser.error(f"--stop-at must be between 1 and --steps ({args.steps})")
    if args.out is None:
        args.out = os.path.join(args.model, FOLDER)
    return args


def main(argv=None) -> int:
    train(parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
