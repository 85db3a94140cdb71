"""The engine's beam path: beam search over one prompt, and OPERA on it (Huang et al., CVPR 2024).

A beam is a row of one batched cache (the prompt is prefilled once and forked ``num_beams`` times). Each step feeds
every beam its last token in one forward, scores the beams' next tokens (plainly, or OPERA's way: see ``Opera``),
keeps the best ``num_beams`` continuations and reorders the cache rows to follow them. The bookkeeping is
transformers 5's own ``_beam_search`` (``generation/utils.py``: top ``2 x num_beams`` continuations, hypotheses ended
by EOS or the length limit kept with their score over ``generated_length ** length_penalty``, its early-stop
heuristic with ``early_stopping=False``), so that plain beam search here equals ``generate(num_beams=...)``
(``tests/test_opera.py``). OPERA's release is ``shikiw/OPERA@61426ef transformers-4.29.2/src/transformers/generation/
utils.py`` L3116-3674 ("the release" below).

Differences from the release, on purpose (every one):

- Length normalisation: the release runs transformers 4.29's ``BeamSearchScorer``, which divides a hypothesis' score
  by its length with the prompt; 5.x, here, by the answer's length only.
- Column scores: the release multiplies and stores ``1e-7 * prod(sigma * A)`` in float16 (overflow to inf, underflow
  to 0, ``loc`` the first of tied columns); here the exact value (``rules.opera_column_scores`` says where it shows).
- Rejected tokens (the ``as_released`` switch, ``Opera.as_released``; default as released): the release keys what a
  rollback rejects by its position and clears them from the wrong end of its list, so a rejection made in a branch
  the search later undid still applies (``BeamSearch._reject``); the fix keys them by the step restored and forgets
  those of every step a rollback undoes.
- Errors: the release wraps its whole rollback in a bare ``except:`` (L3458, L3555), so any error there means "no
  rollback". The one ordinary settings reach, a position past its ``window_size``-slot lists (a window_size
  shorter than the answer), is reproduced (as released: no rollback there); the rest raise here. Not reproduced: a
  rollback to the slot just before the end of those lists (``pos + 1 == window_size``), where the release fails
  after discarding its history and decodes on from a restored step's candidates.
- Re-feeding after a rollback: the release re-prefills the whole sequence without a cache (L3497-3534); here the
  cache is cropped to the prompt and the kept tokens re-fed, one step each (the same numbers up to rounding).
- The look-ahead: beams x C candidates in one batched forward; ``batched=False`` feeds one candidate per forward, as
  the release does (the same numbers up to rounding, ``tests/test_opera.py``).

OPERA, per step and beam (formulas and lines in ``decoding.rules.opera_*``):

1. the top ``C`` tokens of the raw logits are the candidates; each is fed on the beam's cache (one batched forward of
   beams x C rows, ``RowGroup.lookahead``; the cache is cropped back, as 5.x caches grow in place) for its last-layer
   attention, max over heads, renormalised;
2. the window (the answer's tokens' rows and columns, the candidate's last) gives the candidate's over-trust penalty
   (``rules.opera_penalty``), subtracted from its logit; the beam then chooses among its candidates only
   (``rules.opera_candidates``);
3. retrospection: when the same window column has led (``loc``) more than ``threshold`` times in every beam, the
   search goes back to the step after it (``rules.opera_rollback_loc`` / ``opera_rollback_position``): every beam,
   score and finished hypothesis as they were then, the cache re-fed from the prompt, and that step chosen again from
   the whole vocabulary, minus what it chose before (``rules.opera_rollback_logits``).

The window's rows are each answer token's query as the beam fed it; they are reordered with the beams.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch

from models.adapters.base import FamilyAdapter, RowInputs

from . import rules
from .attention import lab_attention_for
from .combination import Combination
from .engine import RowGroup
from .trace import BranchView, TokenTrace, streamed_piece, top_candidates

_DROPPED = -1.0e9  # transformers' score for a continuation that may not go on (utils.py _beam_search)


@dataclass(frozen=True)
class Opera:
    """OPERA's settings (the release's defaults: ``opera_beam_search`` L3130-3135, chair_eval.py / README)."""

    scale: float = 50.0  # scale_factor sigma
    threshold: int = 15  # a column leading more than this many times in every beam triggers a rollback
    num_candidates: int = 5  # num_attn_candidates C: also the most rollbacks to one position
    penalty_weight: float = 1.0  # penalty_weights
    history: int = 512  # window_size: steps of history a rollback can reach back
    # Which tokens a rollback rejects: True, the release's bookkeeping (``BeamSearch._reject``); False, the fix.
    as_released: bool = True


@dataclass
class BeamEvent:
    """One iteration of the search: the best hypothesis so far (the best running beam while the search runs, the
    best finished one at the end), and a rollback made at this iteration as (window tokens, position), if any."""

    step: int
    tokens: list[TokenTrace]
    text: str
    done: bool = False
    stop_reason: str | None = None
    rollback: tuple[int, int] | None = None


@dataclass
class _Beam:
    tokens: list[int] = field(default_factory=list)
    traces: list[TokenTrace] = field(default_factory=list)
    text: str = ""


@dataclass
class _State:
    """Everything a rollback restores, as it was at the start of a step (after its forward)."""

    beams: list[_Beam]
    scores: torch.Tensor  # (beams,) running sums of log-probabilities
    finished: list[tuple[float, _Beam, str]]  # (normalised score, hypothesis, why it ended), best first
    unsatisfied: bool  # transformers' early-stop heuristic: the running beams may still beat the finished ones
    logits: torch.Tensor  # (beams, vocab) raw logits of this step
    attention: dict
    window: torch.Tensor  # (beams, t, t) OPERA's window of the answer so far
    loc: torch.Tensor | None = None  # (beams,) OPERA's leading column at this step
    chosen: set[int] = field(default_factory=set)  # parent * vocab + token of the beams this step continued with


class BeamSearch:
    """Beam search on one row; ``opera`` adds OPERA's penalty and rollback. Iterate ``run()`` for BeamEvents."""

    def __init__(
        self,
        adapter: FamilyAdapter,
        row: RowInputs,
        combine: Callable[[dict[str, torch.Tensor], int], Combination] | None = None,
        *,
        num_beams: int = 5,
        opera: Opera | None = None,
        max_new_tokens: int = 64,
        attention_layers: list[int] | str | None = None,
        ignore_eos: bool = False,
        batched: bool = True,
        length_penalty: float = 1.0,
        should_stop: Callable[[], bool] | None = None,
    ):
        if not isinstance(num_beams, int) or isinstance(num_beams, bool) or num_beams < 1:
            raise ValueError(f"num_beams must be an integer >= 1, got {num_beams!r}")
        self.adapter, self.row, self.opera, self.num_beams = adapter, row, opera, num_beams
        self.combine = combine or functools.partial(_default_rule, opera=opera)
        self.max_new_tokens, self.attention_layers, self.batched = max_new_tokens, attention_layers, batched
        self.length_penalty, self.should_stop = length_penalty, should_stop
        self.eos = set() if ignore_eos else set(adapter.eos_token_ids)
        self.rollback_log: list[tuple[int, int]] = []  # the last run's rollbacks: (window tokens, position)

    # -- the loop ------------------------------------------------------------------------------------------------
    def run(self) -> Iterator[BeamEvent]:
        """A fresh search (each call starts over), one event per iteration."""
        self.history: list[_State] = []
        self.rollbacks: dict[int, int] = {}  # position -> rollbacks counted there
        self.rejected: dict[int, set[int]] = {}  # key -> parent * vocab + token it may not choose again (``_reject``)
        self.rejected_key = 0  # the key of the step a rollback returned to
        self.rollback_log = []
        model = self.adapter.model
        attention = self.opera is not None or self.attention_layers is not None
        with lab_attention_for(model) if attention else contextlib.nullcontext():
            yield from self._loop()

    def _loop(self) -> Iterator[BeamEvent]:
        n = self.num_beams
        watched = set(range(n)) if self.attention_layers is not None else set()
        group = RowGroup(self.adapter, list(range(n)), [self.row] * n, watched)
        group.capture_attention = self.opera is not None
        logits, attention, _ = group.prefill(self.attention_layers)
        self.group, self.prompt_length = group, group.attention_mask.shape[1]
        scores = torch.full((n,), _DROPPED)
        scores[0] = 0.0  # only the first beam's continuations count at the first step (identical beams)
        state = _State([_Beam() for _ in range(n)], scores, [], True, logits, attention, torch.zeros(n, 0, 0))
        iteration, again = 0, False
        while True:
            if self.should_stop is not None and self.should_stop():
                yield self._event(iteration, state, "stopped")
                return
            step = len(state.beams[0].tokens)
            self.history[step:] = [state]
            outcome = self._choose(state, step, again)
            iteration += 1
            if isinstance(outcome, tuple):  # a rollback: the step it went back to is chosen again
                state, again = self._restore(*outcome, window=step + 1), True
                yield dataclasses.replace(self._event(iteration, state, None), rollback=self.rollback_log[-1])
                continue
            state, again = outcome, False
            if state.logits is None:
                yield self._event(iteration, state, "done")
                return
            yield self._event(iteration, state, None)

    def _event(self, iteration: int, state: _State, end: str | None) -> BeamEvent:
        if end is None:
            best = state.beams[0]
            return BeamEvent(iteration, list(best.traces), best.text)
        if end == "done" and state.finished:
            _, best, reason = state.finished[0]
        else:
            best, reason = state.beams[0], "stopped"
        traces, text = list(best.traces), best.text
        whole = self.adapter.decode(best.tokens)
        rest = whole[len(text):] if traces and whole.startswith(text) else ""
        if rest:  # an unfinished character's bytes, held back while the answer went on (``streamed_piece``)
            traces[-1] = dataclasses.replace(traces[-1], piece=traces[-1].piece + rest)
            text += rest
        return BeamEvent(iteration, traces, text, done=True, stop_reason=reason)

    # -- one step ------------------------------------------------------------------------------------------------
    def _choose(self, state: _State, step: int, again: bool):
        """Score, maybe roll back (returns (step to restore, window)), else select and feed the chosen tokens."""
        logits = state.logits
        penalty = candidates = None
        if again:  # the step a rollback returned to: the whole vocabulary, minus what it chose before
            scores, scalars = rules.opera_rollback_logits(logits, self._rejected_mask(logits)), None
        elif self.opera is not None:
            penalty, candidates = self._over_trust(state, step)
            scores = self.combine({"original": logits, "over_trust": penalty}, step).logits
            rollback = self._rollback_to(state, step)
            if rollback is not None:
                return rollback
            scalars = self.opera.penalty_weight * penalty
        else:
            scores, scalars = self.combine({"original": logits}, step).logits, None
        return self._select(state, step, scores, candidates, scalars)

    def _over_trust(self, state: _State, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Each beam's candidates (beams, C) and their over-trust penalties (beams, C); ``state.loc`` set."""
        opera, group = self.opera, self.group
        candidates = state.logits.topk(opera.num_candidates, dim=-1).indices
        rows = group.lookahead(candidates.to(group.device), batched=self.batched)
        rows = rows / rows.sum(dim=-1, keepdim=True)  # utils.py L3415
        mass = rows.index_select(-1, group.image_key_positions[0]).sum(dim=-1)
        n, c, t = rows.shape[0], rows.shape[1], step + 1
        local = torch.zeros(n, c, t, t)
        local[:, :, :step, :step] = state.window[:, None]
        local[:, :, step, :] = rows[..., self.prompt_length :].cpu()
        penalty, loc = rules.opera_penalty(local, mass.cpu(), scale=opera.scale)
        state.loc = loc.mode(dim=-1).values  # per beam, the mode over its candidates (L3437)
        return penalty, candidates.cpu()

    def _rollback_to(self, state: _State, step: int) -> tuple[int, int] | None:
        """(the step to restore, the position the release keys that rollback's rejections by), or None."""
        locs = torch.stack([s.loc for s in self.history[: step + 1]], dim=1)
        # The rules unchecked (``__wrapped__``): compare checked OPERA's parameters once, where they came in.
        loc = rules.opera_rollback_loc.__wrapped__(locs, threshold=self.opera.threshold)
        if loc is None or (self.opera.as_released and loc + 1 >= self.opera.history):
            return None  # as released, a position past its window_size-slot list fails inside its bare except
        where = rules.opera_rollback_position.__wrapped__(
            loc, self.rollbacks, window=step + 1, num_candidates=self.opera.num_candidates,
            history=self.opera.history,
        )
        if where is None:
            return None
        counted, pos = where
        self.rollbacks[counted] = self.rollbacks.get(counted, 0) + 1
        # The release restores history_states[-2] after popping W - pos - 2 states: step pos, or the step before
        # this one when pos is this step or the next (L3477-3480).
        restore = min(pos, step - 1)
        self.rollback_log.append((step + 1, restore))
        return restore, pos

    def _rejected_mask(self, logits: torch.Tensor) -> torch.Tensor:
        mask = torch.zeros(logits.numel(), dtype=torch.bool)
        mask[list(self.rejected.get(self.rejected_key, ()))] = True
        return mask.view_as(logits)

    def _select(self, state: _State, step: int, scores, candidates, penalties) -> _State:
        """transformers 5's beam step (``_get_top_k_continuations``, ``_update_finished_beams``,
        ``_check_early_stop_heuristic``), then every beam fed its new token."""
        n, vocab = scores.shape
        log_probs = torch.log_softmax(scores.float(), dim=-1)
        values, flat = (log_probs + state.scores[:, None]).view(-1).topk(max(2, 1 + len(self.eos)) * n)
        generated, lp = step + 1, self.length_penalty
        ends = [("eos" if f % vocab in self.eos else "max_new_tokens") if f % vocab in self.eos or
                generated >= self.max_new_tokens else None for f in flat.tolist()]
        made: dict[int, _Beam] = {}

        def beam(rank: int) -> _Beam:
            if rank not in made:
                parent, token = divmod(int(flat[rank]), vocab)
                trace = self._trace(state, step, parent, token, scores, log_probs, candidates, penalties)
                made[rank] = trace
            return made[rank]

        finished = list(state.finished)
        if state.unsatisfied:
            finished += [(float(values[r]) / generated**lp, beam(r), ends[r]) for r in range(n) if ends[r]]
            finished = sorted(finished, key=lambda f: -f[0])[:n]
        running = values + torch.tensor([e is not None for e in ends], dtype=torch.float32) * _DROPPED
        order = running.topk(n).indices.tolist()
        beams, new_scores = [beam(r) for r in order], running[order]
        state.chosen = {int(flat[r]) for r in order}
        unsatisfied = state.unsatisfied and (
            len(finished) < n or float(new_scores[0]) / generated**lp > finished[-1][0]
        )
        parents = [int(flat[r]) // vocab for r in order]
        window = state.window[parents]
        if not unsatisfied or all(e is not None for e in ends):
            return _State(beams, new_scores, finished, False, None, {}, window)
        self.group.reorder(parents)
        logits, attention, _ = self.group.step(
            {i: b.tokens[-1] for i, b in enumerate(beams)}, self.attention_layers
        )
        return _State(beams, new_scores, finished, unsatisfied, logits, attention, self._grown(window))

    def _grown(self, window: torch.Tensor) -> torch.Tensor:
        """The window with the row of the token just fed (its query's last-layer attention, max over heads,
        renormalised; utils.py L3347-3356, L3415); unchanged without OPERA."""
        if self.opera is None:
            return window
        row = self.group.attentions[-1][:, :, -1, :].float().amax(dim=1)
        row = (row / row.sum(dim=-1, keepdim=True))[:, self.prompt_length :].cpu()
        n, t = row.shape
        grown = torch.zeros(n, t, t)
        grown[:, : t - 1, : t - 1] = window
        grown[:, t - 1, :] = row
        return grown

    def _trace(self, state, step, parent, token, scores, log_probs, candidates, penalties) -> _Beam:
        """The beam continuing ``parent`` with ``token``, with that token's trace."""
        before = state.beams[parent]
        tokens = [*before.tokens, token]
        piece, text = streamed_piece(self.adapter.decode(tokens), before.text, self.adapter.decode([token]))
        piece_of = self.adapter.token_piece
        original = torch.log_softmax(state.logits[parent].float(), dim=-1)
        final = log_probs[parent]
        scalars = {}
        if self.opera is not None:
            pen = 0.0  # a token chosen at a rollback step, or outside the candidates (none left): no penalty
            if penalties is not None and bool((candidates[parent] == token).any()):
                pen = float(penalties[parent][candidates[parent] == token][0])
            scalars["over_trust_penalty"] = pen
        trace = TokenTrace(
            step=step,
            token_id=token,
            piece=piece,
            branches={"original": BranchView(float(original[token].exp()), top_candidates(original.exp(), piece_of))},
            final=BranchView(float(final[token].exp()), top_candidates(final.exp(), piece_of)),
            plausible_set_size=int((scores[parent] > _FILL).sum()),
            changed=token != int(original.argmax()),
            contrast_shift=float(final[token] - original[token]),
            scalars=scalars,
            image_attention=state.attention.get(parent),
        )
        return _Beam(tokens, [*before.traces, trace], text)

    # -- retrospection -------------------------------------------------------------------------------------------
    def _restore(self, restore: int, pos: int, window: int) -> _State:
        """Everything as it was at step ``restore``; the cache re-fed from the prompt with each beam's tokens; what
        that step chose before rejected (``_reject``)."""
        saved = self.history[restore]
        self.history[restore + 1 :] = []
        self._reject(saved.chosen, restore, pos, window)
        group = self.group
        group.rewind(self.prompt_length)
        logits, attention = saved.logits, saved.attention
        for k in range(restore):
            fed = {i: b.tokens[k] for i, b in enumerate(saved.beams)}
            logits, attention, _ = group.step(fed, self.attention_layers if k == restore - 1 else None)
        return dataclasses.replace(saved, logits=logits, attention=attention, chosen=set())

    def _reject(self, chosen: set[int], restore: int, pos: int, window: int) -> None:
        """Record what the restored step chose before, as rejected when it is chosen again.

        As released (L3478-3481, L3538-3550): the rejections are kept under the rollback's position ``pos`` (the step
        restored, or one or two past it when the column that led is one of the window's last two), with every earlier
        rollback's to that position; a rollback clears the position after its own, and the ``window - pos - 2`` last
        slots of the ``window_size``-slot list (the end of that list, not the steps undone). So a rejection made in a
        branch of the search that a later rollback undid still applies when the search reaches its position again.
        Fixed: kept under the step restored; a rollback forgets the rejections of every step it undoes."""
        if self.opera.as_released:
            for j in range(window - pos - 2):
                self.rejected.pop(self.opera.history - 1 - j, None)
            self.rejected.pop(pos + 1, None)
            self.rejected_key = pos
        else:
            self.rejected = {k: v for k, v in self.rejected.items() if k <= restore}
            self.rejected_key = restore
        self.rejected[self.rejected_key] = self.rejected.get(self.rejected_key, set()) | chosen


def _default_rule(logits: dict[str, torch.Tensor], t: int, opera: Opera | None) -> Combination:
    """Plain beam search's scores (the raw logits), or OPERA's (``rules.opera_candidates``; the registry's OPERA
    record binds the same rule to its parameters)."""
    if opera is None:
        return Combination(logits["original"].float())
    return Combination(rules.opera_candidates.__wrapped__(
        logits["original"], logits.get("over_trust"), opera.num_candidates, opera.penalty_weight
    ))


_FILL = -999.0  # OPERA's score of a token a step may not choose (rules.opera_candidates): not counted as plausible


def teacher_forced(adapter: FamilyAdapter, row: RowInputs, tokens: list[int]) -> list[torch.Tensor]:
    """The (vocab,) log-probabilities ``row`` gives each of ``tokens`` after the ones before it (visual dependence
    of a beam's answer, against the noised image)."""
    group = RowGroup(adapter, [0], [row], set())
    logits, _, _ = group.prefill(None)
    out = [torch.log_softmax(logits[0], dim=-1)]
    for token in tokens[:-1]:
        logits, _, _ = group.step({0: token}, None)
        out.append(torch.log_softmax(logits[0], dim=-1))
    return out
