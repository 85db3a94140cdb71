"""One engine for every method: all rows of a comparison go through ONE batched forward per generated token.

A *row* is one prompt fed to the model (the real image, a noised copy, a text-only prompt, ...). A *side* is one
answer being written (the baseline panel, the method panel): it owns an "original" row and any number of contrast
rows, all fed the side's own chosen token at each step, and a rule that combines their logits into the distribution
the side decodes from.

Every row keeps its own KV cache (a row of one batched cache). Two branches sharing one cache is the bug that silently
disabled the first public VCD release after its first token: here each row only ever sees its own tokens. Rows with
identical prompts are prefilled once and their cache forked; rows of different lengths are left-padded, with each
row's own position ids (M-RoPE included, from the adapter). When a side finishes, its rows leave the batch.

``batched=False`` runs the same rows the papers' way, each alone with its own cache, one forward per row per step:
the reference the batched engine is tested and benchmarked against.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch

from models.adapters.base import FamilyAdapter, RowInputs

from .attention import Edit, LabControl, OneLayerEnhancement, lab_attention_for
from .combination import Combination, Combine, original_only  # noqa: F401  (Combination: a rule's return, re-exported)
from .sampling import SamplingConfig, check_max_new_tokens
from .trace import BranchView, TokenTrace, first_top_layer, streamed_piece, top_candidates


@dataclass
class Side:
    """One answer being written.

    roles:          role name -> index into the run's rows; "original" is required.
    combine:        rule turning the roles' float32 (1, vocab) logits at a step into the distribution to decode from.
    distorted_role: the role whose row holds a distorted image, for visual dependence (None: not measured).
    layers:         hidden-state indices (0 = the embeddings, as in transformers' ``hidden_states``) whose early-exit
                    logits of the original row, ``lm_head(h_j)`` with no final norm (DoLa's premature layers), the
                    rule also receives, as ``"layer j"``; they are not rows and are not traced.
    normed_layers:  hidden-state indices whose early exits through the decoder's final norm, ``lm_head(norm(h_j))``
                    (DeCo's), the rule also receives, as ``"normed layer j"``; ``layers``' stay unnormed.
    attention_edits: role -> the attention edit on that role's row (``decoding.attention``: PAI's amplification of
                    the original row, SID's self-introspection of its contrast row; ONLY's one-layer enhancement of
                    the original row, whose rule then also receives ``"enhanced"`` (1, vocab), the textually
                    enhanced logits, and ``"removed heads"`` (1, 1)).
    first_top:      record, for each chosen token, the first layer whose early exit (every hidden-state index, the
                    final one the model's own logits) has it as its argmax (``TokenTrace.early_exit``; DoLa runs).
    features:       None, or hidden-state indices j: the rule also receives the original row's per-token features
                    of the same forward, ``"hidden j"`` (1, hidden), its raw last-position hidden state, and
                    ``"image attention"`` (1, layers), the share of the last query's head-mean attention on the
                    row's image tokens in each layer (ECD's detector; eager attention for the run).
    seed:           the seed of this side's sampling generator; None: the run's ``sampling.seed``. Sides of several
                    requests decoded in one run (``answer_many``) each keep their request's seed, so a request samples
                    the same tokens in a shared batch as alone.
    """

    name: str
    method: str
    roles: dict[str, int]
    combine: Combine = original_only
    distorted_role: str | None = None
    layers: tuple[int, ...] = ()
    attention_edits: dict[str, Edit] = field(default_factory=dict)
    first_top: bool = False
    features: tuple[int, ...] | None = None
    seed: int | None = None
    normed_layers: tuple[int, ...] = ()

    def __post_init__(self):
        if "original" not in self.roles:
            raise ValueError(f"side {self.name!r} needs an 'original' row")
        if self.distorted_role is not None and self.distorted_role not in self.roles:
            raise ValueError(f"side {self.name!r}: distorted role {self.distorted_role!r} is not one of its rows")


@dataclass
class StepEvent:
    """What one step produced: the token each still-active side chose, with its trace.

    row_logits: (n_rows, vocab) float32 raw logits of every row at this step, NaN for rows that have left the batch;
    only filled when the run was asked to ``record_logits`` (tests and benchmarks compare them).
    finished:   names of the sides that finished at this step, with why ("eos" / "max_new_tokens").
    """

    step: int
    tokens: dict[str, TokenTrace]
    finished: dict[str, str] = field(default_factory=dict)
    row_logits: torch.Tensor | None = None


class RowGroup:
    """Rows that share one batched forward and one batched KV cache (row i of the cache belongs to row i only)."""

    def __init__(
        self,
        adapter: FamilyAdapter,
        row_ids: list[int],
        rows: list[RowInputs],
        attention_rows: set[int],
        layer_rows: dict[int, tuple[int, ...]] | None = None,
        edit_rows: dict[int, Edit] | None = None,
        feature_rows: dict[int, tuple[int, ...]] | None = None,
        normed_rows: dict[int, tuple[int, ...]] | None = None,
    ):
        self.adapter = adapter
        self.model = adapter.model
        self.device = adapter.device
        self.row_ids = list(row_ids)
        self.rows = [rows[i] for i in row_ids]
        self.attention_rows = attention_rows
        self.layer_rows = layer_rows or {}
        self.edit_rows = edit_rows or {}
        self.feature_rows = feature_rows or {}
        self.normed_rows = normed_rows or {}
        self.forwards = 0  # complete forwards so far: 0 while prefilling, then one per generated token
        self.cache = None
        self.capture_attention = False  # keep every step's attention weights in ``attentions`` (beam search, OPERA)
        self.attentions = None
        lengths = [r.length for r in self.rows]
        self.width = max(lengths)
        # Where each row's image tokens sit in the left-padded cache; fixed for the whole run.
        self.image_key_positions = [
            r.image_token_positions.to(self.device) + (self.width - r.length) for r in self.rows
        ]

    # -- batching ------------------------------------------------------------------------------------------------
    def _padded_prompt(self, members: list[RowInputs]) -> tuple[dict, dict]:
        """Left-pad the members' prompts into one batch (pads are masked; their positions are never attended).

        Returns the per-token tensors (input_ids, attention_mask, position_ids and the adapter's token kwargs, all
        with the sequence as their last dimension) and, apart, the merged pixel inputs.
        """
        width = self.width
        pad_id = self.adapter.pad_token_id
        n = len(members)
        input_ids = torch.full((n, width), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((n, width), dtype=torch.long)
        mrope = members[0].position_ids.dim() == 3
        position_ids = torch.ones((3, n, width) if mrope else (n, width), dtype=torch.long)
        token_kwargs = {k: torch.zeros((n, width), dtype=v.dtype) for k, v in members[0].token_kwargs.items()}
        for i, row in enumerate(members):
            if (row.position_ids.dim() == 3) != mrope:
                raise ValueError("rows of one run must all use the same kind of position ids")
            start = width - row.length
            input_ids[i, start:] = row.input_ids[0]
            attention_mask[i, start:] = 1
            if mrope:
                position_ids[:, i, start:] = row.position_ids[:, 0]
            else:
                position_ids[i, start:] = row.position_ids[0]
            for key, value in row.token_kwargs.items():
                token_kwargs[key][i, start:] = value[0]
        tokens = {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids}
        tokens.update(token_kwargs)
        vision_rows = [row.vision_kwargs for row in members if row.has_image]
        vision = self.adapter.batch_vision_kwargs(vision_rows) if vision_rows else {}
        return self.adapter.to_model(tokens), self.adapter.to_model(vision)

    def _edited(self, local: int, forward: int | None = None) -> bool:
        """Whether the row at ``local`` has an edit acting on forward number ``forward`` (default: the next one)."""
        edit = self.edit_rows.get(self.row_ids[local])
        return edit is not None and (self.forwards if forward is None else forward) >= edit.first_step

    def _control(self, members: list[int] | None = None) -> LabControl | None:
        """The attention edits of this forward, whose batch holds the rows at local indices ``members`` (all rows
        unless the prefill merged identical prompts): every edited row, from its edit's first step."""
        members = list(range(len(self.row_ids))) if members is None else members
        edits = {
            b: (self.image_key_positions[local], self.edit_rows[self.row_ids[local]])
            for b, local in enumerate(members)
            if self._edited(local)
        }
        if not edits:
            return None
        # Each edited row's tokens after this forward (prompt plus tokens fed): its own positions behind the padding.
        lengths = {b: self.rows[local].length + self.forwards for b, local in enumerate(members) if self._edited(local)}
        return LabControl(edits, lengths=lengths)

    def _forward(self, want_attention: bool, layers: list[int] | None = None, control: LabControl | None = None,
                 **inputs):
        """(last-position logits, attentions or None, {layer: last-position hidden states} for ``layers``, and
        ONLY's "enhanced" and "removed heads" where ``control`` has its edit), with the attention edits of
        ``control``."""
        enhanced = control is not None and bool(control.enhanced_rows())
        # All hidden states, not transformers 5's list of indices: that list reaches the vision tower too, which then
        # drops the layer LLaVA takes its image features from. ONLY's rows need none: its hooks keep the two it reads.
        extra = {"output_hidden_states": True} if layers else {}
        if control is not None:
            extra["lab_control"] = control
        with torch.inference_mode():
            out = self.adapter.forward(
                **inputs,
                cache=self.cache,
                use_cache=True,
                logits_to_keep=1,
                output_attentions=want_attention,
                return_dict=True,
                **extra,
            )
        self.cache = out.cache
        hidden = {j: out.hidden_states[j][:, -1, :] for j in layers} if layers else {}
        if enhanced:
            hidden.update(self._one_layer_enhanced(control, out.logits.shape[0]))
        if control is not None and control.findings:
            hidden.update(_findings(control.findings, out.logits.shape[0], out.logits.device))
        return out.logits[:, -1, :].float(), (out.attentions if want_attention else None), hidden

    def _one_layer_enhanced(self, control: LabControl, batch: int) -> dict[str, torch.Tensor]:
        """ONLY's "enhanced" logits (batch, vocab) and "removed heads" (batch,) of this forward's rows that have its
        edit (NaN elsewhere): the edited layer's output carried through the last layer's norms and MLP, plus the
        model's own normed last hidden state (``LabControl.final_hidden``: transformers 5's ``hidden_states[-1]``),
        through the head."""
        head = self.model.get_output_embeddings()
        logits = {}
        with torch.inference_mode():
            for b in control.enhanced_rows():
                edit = control.edits[b][1]
                h = self.adapter.one_layer_enhanced_hidden(
                    control.last_layer_input[b][None], control.enhanced_attention[b][None],
                    control.final_hidden[b][None], edit.residual_weight, edit.final_weight)
                logits[b] = head(h)[0].float()
        some = next(iter(logits.values()))
        out = torch.full((batch, some.shape[-1]), float("nan"), device=some.device)
        removed = torch.full((batch,), float("nan"), device=some.device)
        for b, value in logits.items():
            out[b], removed[b] = value, control.removed_heads[b]
        return {"enhanced": out, "removed heads": removed}

    def _wanted_layers(self) -> list[int] | None:
        """Every hidden-state index some row of this group needs, or None."""
        wanted = {j for row in self.row_ids for j in (*self.layer_rows.get(row, ()), *self.feature_rows.get(row, ()),
                                                      *self.normed_rows.get(row, ()))}
        return sorted(wanted) or None

    def _wants_attention(self, attention_layers) -> bool:
        rows = set(self.row_ids)
        recorded = attention_layers is not None and bool(self.attention_rows & rows)
        return recorded or bool(self.feature_rows.keys() & rows)

    def _features(self, hidden: dict[int, torch.Tensor], attentions) -> dict[int, dict[str, torch.Tensor]]:
        """Row id -> ``Side.features``' tensors for the rows that asked: "hidden j" (hidden,) and "image attention"
        (layers,), each layer's head-mean share of the last query's attention on the row's image tokens."""
        out = {}
        for local, row_id in enumerate(self.row_ids):
            if row_id not in self.feature_rows:
                continue
            found = {f"hidden {j}": hidden[j][local].float() for j in self.feature_rows[row_id]}
            weights = torch.stack([a[local, :, -1, :].float().mean(dim=0) for a in attentions])  # (layers, keys)
            on_image = weights.index_select(1, self.image_key_positions[local]).sum(dim=1)
            found["image attention"] = on_image / weights.sum(dim=1).clamp_min(1e-12)
            out[row_id] = found
        return out

    def _extras(self, hidden, attentions) -> dict[int, dict]:
        """Row id -> {layer j: early-exit logits, and the ``Side.features`` tensors by their names}."""
        out = self._layer_logits(hidden)
        normed = self._layer_logits(hidden, normed=True)
        for row_id, found in [*self._features(hidden, attentions).items(), *normed.items(),
                              *self._enhanced(hidden).items(), *self._found(hidden).items()]:
            out.setdefault(row_id, {}).update(found)
        return out

    def _found(self, hidden: dict) -> dict[int, dict[str, torch.Tensor]]:
        """Row id -> what the MLP-output edits' hooks found in its forward (``LabControl.findings``: MemVR's), each
        (1,), for the rows they found it for."""
        out = {}
        for name, values in hidden.items():
            if isinstance(name, str) and name.startswith(_FOUND):
                for local, row_id in enumerate(self.row_ids):
                    if not torch.isnan(values[local]):
                        out.setdefault(row_id, {})[name[len(_FOUND):]] = values[local, None]
        return out

    def _enhanced(self, hidden: dict) -> dict[int, dict[str, torch.Tensor]]:
        """Row id -> ONLY's "enhanced" logits (vocab,) and "removed heads" (1,), for the rows whose edit made them:
        those edited in the forward just run (``self.forwards`` already counts it)."""
        if "enhanced" not in hidden:
            return {}
        return {
            row_id: {"enhanced": hidden["enhanced"][local], "removed heads": hidden["removed heads"][local, None]}
            for local, row_id in enumerate(self.row_ids) if self._edited(local, self.forwards - 1)
            and isinstance(self.edit_rows[row_id], OneLayerEnhancement)
        }

    def _layer_logits(self, hidden: dict[int, torch.Tensor], normed: bool = False) -> dict[int, dict]:
        """Row id -> early-exit logits (vocab,) of the layers it asked for: the output head on each layer's last
        hidden state. ``normed`` False: the rows' ``layer_rows``, keyed by the layer j, with no final norm, as DoLa
        computes them (voidism/DoLa modeling_llama.py L699–704). ``normed`` True: the rows' ``normed_rows``, keyed
        "normed layer j", through the decoder's final norm, as DeCo computes them (zjunlp/Deco vendored
        modeling_llama.py L819-825); hidden-state index N, transformers 5's last, is already normed: DeCo's record
        never asks for it."""
        wanted = self.normed_rows if normed else self.layer_rows
        if not hidden or not wanted.keys() & set(self.row_ids):
            return {}
        head = self.model.get_output_embeddings()
        norm = self.model.get_decoder().norm if normed else torch.nn.Identity()
        out = {}
        with torch.inference_mode():
            for local, row_id in enumerate(self.row_ids):
                layers = wanted.get(row_id, ())
                if layers:
                    logits = head(norm(torch.stack([hidden[j][local] for j in layers]))).float()
                    out[row_id] = {f"normed layer {j}" if normed else j: value
                                   for j, value in zip(layers, logits, strict=True)}
        return out

    # -- running -------------------------------------------------------------------------------------------------
    def prefill(self, attention_layers) -> tuple[torch.Tensor, dict[int, dict], dict]:
        """Prefill the distinct prompts once, then fork the cache so every row has its own copy."""
        unique, index = _distinct_rows(self.rows, [self._edited(i) for i in range(len(self.rows))])
        tokens, vision = self._padded_prompt([self.rows[i] for i in unique])
        control = self._control(unique)
        want_attention = self._wants_attention(attention_layers)
        want_layers = self._wanted_layers()
        if want_attention and not self.edit_rows:
            # Eager attention, no edits: the first token's attention is that of the last prompt position; asking every
            # prefill position for its attention would cost (rows x heads x L x L) per layer, so the last position
            # runs as its own chunk (the same numbers: nothing in the run depends on the chunking).
            self._forward(False, None, None, **{k: v[..., :-1] for k, v in tokens.items()}, **vision)
            last = {k: tokens[k][..., -1:] for k in ("input_ids", "position_ids")}
            logits, attentions, hidden = self._forward(
                True, want_layers, None, **last, attention_mask=tokens["attention_mask"]
            )
        else:
            # A run with edits (under ``decoding.attention``; every group holds the run's edits): one forward, which
            # returns only the last query's weights. Chunks would not do: SID hides image keys from every query of
            # the prefill, chosen by the last query's attention.
            if want_attention:
                control = control or LabControl()
                control.last_query_weights = True
            logits, attentions, hidden = self._forward(want_attention, want_layers, control, **tokens, **vision)
        fork = torch.tensor(index, device=self.device)
        if len(unique) != len(self.rows):
            self.cache.reorder_cache(fork)
        logits = logits.index_select(0, fork)
        hidden = {j: h.index_select(0, fork) for j, h in hidden.items()}
        if attentions is not None:
            attentions = tuple(a.index_select(0, fork) for a in attentions)
        self.attention_mask = tokens["attention_mask"].index_select(0, fork)
        positions = tokens["position_ids"]
        last = positions.amax(dim=(0, 2)) if positions.dim() == 3 else positions.amax(dim=1)
        self.next_position = last.index_select(0, fork) + 1
        self.mrope = positions.dim() == 3
        self.forwards = 1
        return logits, self._attention_maps(attentions, attention_layers), self._extras(hidden, attentions)

    def step(self, tokens_by_row: dict[int, int], attention_layers) -> tuple[torch.Tensor, dict[int, dict], dict]:
        """Feed each row its side's chosen token."""
        tokens = torch.tensor([tokens_by_row[row] for row in self.row_ids])
        n = len(self.row_ids)
        self.attention_mask = torch.cat(
            [self.attention_mask, torch.ones((n, 1), dtype=self.attention_mask.dtype, device=self.device)], dim=1
        )
        position_ids = self.next_position[:, None]
        if self.mrope:
            position_ids = position_ids[None].expand(3, n, 1)
        want_attention = self.capture_attention or self._wants_attention(attention_layers)
        logits, attentions, hidden = self._forward(
            want_attention,
            self._wanted_layers(),
            self._control(),
            input_ids=tokens.to(self.device)[:, None],
            attention_mask=self.attention_mask,
            position_ids=position_ids,
        )
        self.next_position = self.next_position + 1
        self.forwards += 1
        self.attentions = attentions
        return logits, self._attention_maps(attentions, attention_layers), self._extras(hidden, attentions)

    def keep(self, keep_ids: list[int]) -> None:
        """Drop the rows not in ``keep_ids`` (their side finished): they stop costing work."""
        local = [i for i, row_id in enumerate(self.row_ids) if row_id in keep_ids]
        if len(local) == len(self.row_ids):
            return
        self.row_ids = [self.row_ids[i] for i in local]
        self.rows = [self.rows[i] for i in local]
        self.image_key_positions = [self.image_key_positions[i] for i in local]
        if not local:
            self.cache = None
            return
        idx = torch.tensor(local, device=self.device)
        # reorder_cache, not batch_select_indices: the same index_select, and it exists on every cache layer type
        # (Qwen3.5's linear-attention layers have no batch_select_indices in transformers 5.24).
        self.cache.reorder_cache(idx)
        self.attention_mask = self.attention_mask.index_select(0, idx)
        self.next_position = self.next_position.index_select(0, idx)

    # -- beam search: rows that follow beams, look ahead and go back ---------------------------------------------
    def reorder(self, index: list[int]) -> None:
        """Row i now continues row ``index[i]``'s answer (a beam's parent): its cache, mask and positions."""
        idx = torch.tensor(index, device=self.device)
        self.cache.reorder_cache(idx)
        self.attention_mask = self.attention_mask.index_select(0, idx)
        self.next_position = self.next_position.index_select(0, idx)

    def rewind(self, length: int) -> None:
        """Forget every position from ``length`` on (a rollback): the cache is cropped, as are mask and positions."""
        cut = self.attention_mask.shape[1] - length
        if cut:
            self.cache.crop(-cut)  # transformers 5.24: crop(-k) drops the last k positions (a positive size raises)
        self.attention_mask = self.attention_mask[:, :length]
        self.next_position = self.next_position - cut

    def lookahead(self, tokens: torch.Tensor, batched: bool = True) -> torch.Tensor:
        """The last layer's attention (max over heads) of each row's query for each of its candidate next tokens
        ``tokens`` (rows, C), over every key: (rows, C, keys + 1), float32. Nothing is kept: 5.x caches grow in
        place, so the cache is cropped back after the forward. ``batched``: the rows x C candidates in one forward
        (each row's cache repeated C times); else one forward per candidate, as OPERA's release does."""
        n, c = tokens.shape
        mask = torch.cat([self.attention_mask, torch.ones_like(self.attention_mask[:, :1])], dim=1)
        position = self.next_position[:, None]
        groups = [(torch.arange(n * c, device=self.device) // c, tokens.reshape(-1, 1))] if batched else [
            (torch.arange(n, device=self.device), tokens[:, k : k + 1]) for k in range(c)
        ]
        rows = []
        for spread, fed in groups:
            if batched:
                self.cache.reorder_cache(spread)
            pos = position.index_select(0, spread)
            pos = pos[None].expand(3, len(spread), 1) if self.mrope else pos
            _, attentions, _ = self._forward(
                True, None, None, input_ids=fed.to(self.device), attention_mask=mask.index_select(0, spread),
                position_ids=pos,
            )
            self.cache.crop(-1)  # the candidate's position
            if batched:
                self.cache.reorder_cache(torch.arange(0, n * c, c, device=self.device))
            rows.append(attentions[-1][:, :, -1, :].float().amax(dim=1))
        return (rows[0].view(n, c, -1) if batched else torch.stack(rows, dim=1))

    def _attention_maps(self, attentions, attention_layers) -> dict[int, dict]:
        """Head-and-layer mean attention of the newest query over each wanted row's image tokens: its grid over the
        picture (None where the image tokens lie on none, ``RowInputs.image_grid``) and its share of all keys."""
        if attentions is None or attention_layers is None:
            return {}
        layers = range(len(attentions)) if attention_layers == "all" else attention_layers
        maps = {}
        for local, row_id in enumerate(self.row_ids):
            row = self.rows[local]
            if row_id not in self.attention_rows or not row.image_token_positions.numel():
                continue
            # (layers, heads, keys) -> (keys,)
            weights = torch.stack([attentions[layer][local, :, -1, :].float() for layer in layers]).mean(dim=(0, 1))
            on_image = weights.index_select(0, self.image_key_positions[local])
            share = float(on_image.sum() / weights.sum().clamp_min(1e-12))
            grid = None
            if row.image_grid is not None:
                grid = (on_image / on_image.sum().clamp_min(1e-12)).reshape(row.image_grid).cpu().tolist()
            maps[row_id] = {"grid": grid, "share": share}
        return maps


class Engine:
    """Runs sides over rows, yielding after every generated token."""

    def __init__(self, adapter: FamilyAdapter):
        self.adapter = adapter

    def run(
        self,
        rows: list[RowInputs],
        sides: list[Side],
        *,
        max_new_tokens: int = 64,
        sampling: SamplingConfig | None = None,
        batched: bool = True,
        attention_layers: list[int] | str | None = None,
        ignore_eos: bool = False,
        record_logits: bool = False,
        should_stop: Callable[[], bool] | None = None,
    ) -> Iterator[StepEvent]:
        """Decode every side together; yields one StepEvent per step until every side has finished.

        attention_layers: None (no image attention), "all", or a list of language-model layer indices whose
        head-mean attention over the image tokens is recorded for each side's original row.
        ignore_eos: keep going to ``max_new_tokens`` (benchmarks: every run does the same work).
        should_stop: polled before every step; True ends the run (the Stop button).
        """
        sampling = sampling or SamplingConfig()
        _check_run(rows, sides, max_new_tokens, attention_layers)
        adapter = self.adapter
        eos = set() if ignore_eos else set(adapter.eos_token_ids)
        warpers = sampling.warpers() if sampling.do_sample else None
        seeds = {side.name: sampling.seed if side.seed is None else side.seed for side in sides}
        generators = {name: torch.Generator().manual_seed(seed) for name, seed in seeds.items()}
        attention_rows = {side.roles["original"] for side in sides} if attention_layers is not None else set()
        layer_rows = {side.roles["original"]: _early_exits(side, adapter.model) for side in sides}
        layer_rows = {row: layers for row, layers in layer_rows.items() if layers}
        feature_rows = {side.roles["original"]: side.features for side in sides if side.features is not None}
        normed_rows = {side.roles["original"]: side.normed_layers for side in sides if side.normed_layers}
        edit_rows = {side.roles[role]: edit for side in sides for role, edit in side.attention_edits.items()}
        row_side = {row: side for side in sides for row in side.roles.values()}
        row_ids = list(range(len(rows)))
        groups = [
            RowGroup(runner, members, rows, attention_rows, layer_rows, edit_rows, feature_rows, normed_rows)
            for runner, members in _row_groups(adapter, rows, batched)
        ]
        state = {side.name: _SideState(side, adapter) for side in sides}
        record = attention_layers is not None or bool(feature_rows)
        with _attention_for_run(adapter.model, record, bool(edit_rows)):
            logits, attention, layers = self._gather(groups, len(rows), lambda g: g.prefill(attention_layers))
            for step in range(max_new_tokens):
                if should_stop is not None and should_stop():
                    for s in state.values():
                        if not s.finished:
                            s.finish("stopped")
                    return
                event = StepEvent(step=step, tokens={}, row_logits=logits.clone() if record_logits else None)
                for name, s in state.items():
                    if s.finished:
                        continue
                    token_trace = s.choose(logits, step, warpers, generators[name], attention, layers)
                    event.tokens[name] = token_trace
                    if token_trace.token_id in eos:
                        event.finished[name] = s.finish("eos")
                    elif step + 1 == max_new_tokens:
                        event.finished[name] = s.finish("max_new_tokens")
                    if s.finished:
                        token_trace.piece += s.flush()
                if all(s.finished for s in state.values()):
                    yield event
                    return
                if event.finished:
                    keep = [row for row in row_ids if not state[row_side[row].name].finished]
                    for group in groups:
                        group.keep(keep)
                    groups = [g for g in groups if g.row_ids]
                tokens_by_row = {row: state[row_side[row].name].tokens[-1] for row in row_ids}
                yield event
                logits, attention, layers = self._gather(
                    groups, len(rows), lambda g, chosen=tokens_by_row: g.step(chosen, attention_layers)
                )

    # The pre-steps a method runs before its answer (``decoding.branch_rows.PreSteps``), through this same engine.
    def greedy_answer(
        self, row: RowInputs, max_new_tokens: int, progress: Callable[[str, float], None] | None = None, stage: str = ""
    ) -> str:
        """A plain greedy answer for one row (stripped), reporting ``(stage, share done)`` to ``progress``."""
        side = Side("answer", "baseline", {"original": 0})
        text = ""
        for event in self.run([row], [side], max_new_tokens=max_new_tokens, sampling=SamplingConfig()):
            text += event.tokens["answer"].piece
            if progress is not None:
                progress(stage, (event.step + 1) / max_new_tokens)
        return text.strip()

    def first_step_logits(self, rows: list[RowInputs]) -> torch.Tensor:
        """Each row's raw next-token logits at the first step, from one batched prefill: ``(len(rows), vocab)``."""
        sides = [Side(f"row {i}", "baseline", {"original": i}) for i in range(len(rows))]
        event = next(self.run(rows, sides, max_new_tokens=1, record_logits=True))
        return event.row_logits

    @staticmethod
    def _gather(groups, n_rows, call):
        """Run ``call`` on every group and put the rows' logits back in global row order (NaN for gone rows)."""
        logits = None
        attention: dict[int, dict] = {}
        layers: dict[int, dict] = {}
        for group in groups:
            group_logits, group_attention, group_layers = call(group)
            if logits is None:
                logits = torch.full((n_rows, group_logits.shape[-1]), float("nan"), device=group_logits.device)
            # An amateur's group may live on another device than the model's (``decoding.use_amateur(device=)``).
            logits[torch.tensor(group.row_ids, device=logits.device)] = group_logits.to(logits.device)
            attention.update(group_attention)
            layers.update(group_layers)
        return logits, attention, layers


class _SideState:
    """A side's tokens so far and how it turns a step's row logits into a token and its trace."""

    def __init__(self, side: Side, adapter: FamilyAdapter):
        self.side = side
        self.adapter = adapter
        self.tokens: list[int] = []
        self.text = ""
        self.finished = False
        self.stop_reason: str | None = None

    def finish(self, reason: str) -> str:
        self.finished, self.stop_reason = True, reason
        return reason

    def choose(self, logits: torch.Tensor, step: int, warpers, generator, attention, layers) -> TokenTrace:
        side = self.side
        branch_logits = {role: logits[row][None] for role, row in side.roles.items()}
        extras = layers.get(side.roles["original"], {})
        early_exits = {j: value for j, value in extras.items() if isinstance(j, int)}
        exits = {f"layer {j}": early_exits[j][None] for j in side.layers}
        features = {name: value[None] for name, value in extras.items() if isinstance(name, str)}
        combination = side.combine({**branch_logits, **exits, **features}, step)
        final_logits = combination.logits.float()
        if warpers is not None:
            final_logits = warpers(None, final_logits)
        final_probs = torch.softmax(final_logits[0], dim=-1)
        if warpers is None:
            token = int(final_logits[0].argmax())
        else:
            token = int(torch.multinomial(final_probs.cpu(), 1, generator=generator))
        piece = self._append(token)

        piece_of = self.adapter.token_piece
        log_probs = {role: torch.log_softmax(value[0], dim=-1) for role, value in branch_logits.items()}
        branches = {}
        for role, lp in log_probs.items():
            probs = lp.exp()
            branches[role] = BranchView(float(probs[token]), top_candidates(probs, piece_of))
        final = BranchView(float(final_probs[token]), top_candidates(final_probs, piece_of))
        original_lp = log_probs["original"]
        visual_dependence = None
        if side.distorted_role is not None:
            visual_dependence = float(original_lp[token] - log_probs[side.distorted_role][token])
        contrast_shift = float(torch.log(final_probs[token]) - original_lp[token]) if side.method != "baseline" else 0.0
        return TokenTrace(
            step=step,
            token_id=token,
            piece=piece,
            branches=branches,
            final=final,
            plausible_set_size=int(torch.isfinite(final_logits[0]).sum()),
            changed=token != int(original_lp.argmax()),
            visual_dependence=visual_dependence,
            contrast_shift=contrast_shift,
            scalars=dict(combination.scalars),
            image_attention=attention.get(side.roles["original"]),
            early_exit=self._first_top(early_exits, branch_logits["original"][0], token),
        )

    def _first_top(self, early_exits: dict[int, torch.Tensor], logits: torch.Tensor, token: int):
        """``TokenTrace.early_exit`` for a side that records it; the final layer is the model's own logits."""
        if not self.side.first_top:
            return None
        return first_top_layer({**early_exits, max(early_exits): logits}, token)

    def _append(self, token: int) -> str:
        """Add a token; its piece is what it adds to the decoded answer (keeps the spaces single-token decodes drop;
        ``trace.streamed_piece``: a byte of a character split over tokens adds nothing until the character is whole)."""
        self.tokens.append(token)
        piece, self.text = streamed_piece(self.adapter.decode(self.tokens), self.text, self.adapter.decode([token]))
        return piece

    def flush(self) -> str:
        """At the end of the answer: the text still held back (an unfinished character's U+FFFD), now given out."""
        rest = self.adapter.decode(self.tokens)
        piece = rest[len(self.text):] if rest.startswith(self.text) else ""
        self.text += piece
        return piece


def _row_groups(adapter: FamilyAdapter, rows: list[RowInputs], batched: bool) -> list[tuple[FamilyAdapter, list[int]]]:
    """(the model that runs them, row ids) of each row group: batched, one group per model (the expert's rows, and
    an amateur's, ``models.amateur.AmateurRow``, which names its own); else one group per row (the papers' way)."""
    by_model: dict[int, tuple[FamilyAdapter, list[int]]] = {}
    for i, row in enumerate(rows):
        runner = getattr(row, "runner", None) or adapter
        by_model.setdefault(id(runner), (runner, []))[1].append(i)
    if batched:
        return list(by_model.values())
    return [(runner, [i]) for runner, members in by_model.values() for i in members]


_FOUND = "found "  # the prefix of ``LabControl.findings``' tensors among a forward's hidden-state extras


def _findings(findings: dict[int, dict[str, float]], batch: int, device) -> dict[str, torch.Tensor]:
    """``LabControl.findings`` as one (batch,) tensor per name, NaN for the rows without it, under ``_FOUND``'s
    prefix (so that a prefill's fork selects them like the hidden states)."""
    out = {}
    for b, found in findings.items():
        for name, value in found.items():
            out.setdefault(_FOUND + name, torch.full((batch,), float("nan"), device=device))[b] = value
    return out


def _early_exits(side: Side, model) -> tuple[int, ...]:
    """The hidden-state indices whose early exits a side's original row needs: its rule's (DoLa's candidates), and
    with ``first_top`` every one, 0 (the embeddings) to N (the final layer, through the final norm: the model's own
    logits)."""
    wanted = set(side.layers)
    if side.first_top:
        wanted |= set(range(model.config.get_text_config().num_hidden_layers + 1))
    return tuple(sorted(wanted))


def _distinct_rows(rows: list[RowInputs], alone: list[bool] | None = None) -> tuple[list[int], list[int]]:
    """Indices of the distinct prompts, and for every row the position of its prompt among them; a row marked
    ``alone`` (its prefill is edited) shares its prefill with no other."""
    alone = alone or [False] * len(rows)
    unique: list[int] = []
    index: list[int] = []
    for i, row in enumerate(rows):
        for u, j in enumerate(unique):
            if not alone[i] and not alone[j] and same_prompt(row, rows[j]):
                index.append(u)
                break
        else:
            index.append(len(unique))
            unique.append(i)
    return unique, index


def same_prompt(a: RowInputs, b: RowInputs) -> bool:
    def same(x, y):
        return x.shape == y.shape and x.dtype == y.dtype and torch.equal(x, y)

    return (
        same(a.input_ids, b.input_ids)
        and same(a.position_ids, b.position_ids)
        and a.token_kwargs.keys() == b.token_kwargs.keys()
        and all(same(a.token_kwargs[k], b.token_kwargs[k]) for k in a.token_kwargs)
        and a.vision_kwargs.keys() == b.vision_kwargs.keys()
        and all(same(a.vision_kwargs[k], b.vision_kwargs[k]) for k in a.vision_kwargs)
    )


def _attention_for_run(model, record: bool, edit: bool):
    """The attention implementation a run needs: ours where a side edits attention or attention is recorded (it
    returns every layer's weights, as eager attention does, and is sdpa elsewhere), else the model's own. One
    implementation for both, switched once for all the model's runs at a time (``lab_attention_for``): a run
    switching the model to eager while another had it on ours took that one's edits away."""
    return lab_attention_for(model) if edit or record else contextlib.nullcontext()


def _check_run(rows, sides, max_new_tokens, attention_layers) -> None:
    if not rows:
        raise ValueError("a run needs at least one row")
    if not sides:
        raise ValueError("a run needs at least one side")
    check_max_new_tokens(max_new_tokens)
    names = [s.name for s in sides]
    if len(set(names)) != len(names):
        raise ValueError(f"side names must be distinct, got {names}")
    owner: dict[int, str] = {}
    for side in sides:
        for role, row in side.roles.items():
            if not 0 <= row < len(rows):
                raise ValueError(
                    f"side {side.name!r} role {role!r} points at row {row}, but there are {len(rows)} rows"
                )
            if row in owner and owner[row] != side.name:
                # A row is fed its side's tokens: sharing it between sides would mix two answers in one cache.
                raise ValueError(f"row {row} belongs to both {owner[row]!r} and {side.name!r}")
            owner[row] = side.name
    if len(owner) != len(rows):
        raise ValueError(f"rows {sorted(set(range(len(rows))) - set(owner))} belong to no side")
    if attention_layers is not None and attention_layers != "all":
        if not isinstance(attention_layers, (list, tuple)) or not all(
            isinstance(i, int) and not isinstance(i, bool) for i in attention_layers
        ):
            raise ValueError(
                f"attention_layers must be None, 'all' or a list of layer indices, got {attention_layers!r}"
            )
