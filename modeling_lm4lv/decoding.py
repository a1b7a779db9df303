"""The decoding of `LM4LVForConditionalGeneration.generate`: the per-sample state, the decoding run (the frozen LLM
behind a KV cache, the visual feedback, and the loop's steps: prefill, visual runs, mixed text steps), and the visual
step captured as a CUDA graph.

Two caches: a dynamic one (transformers' `DynamicCache`, grown per step) and a static one (`StaticCache`,
preallocated for the whole call, so every step has the same shapes and the same tensor addresses). On CUDA, the
static cache lets the visual run, one step per visual token, be captured once as a CUDA graph and replayed: a step
then costs one graph launch instead of the thousands of kernel launches Python makes through the LLM's modules. The
static cache, the buffers the graph reads and the graph itself are kept per model and call shape
(`StaticDecoding`) and reused by later `generate()` calls of that shape: one capture serves an evaluation loop or a
tiled photo.
"""

import warnings
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field

import torch
from torch.nn import functional as F
from transformers import DynamicCache, StaticCache
from transformers.utils import ModelOutput

CACHE_IMPLEMENTATIONS = ("dynamic", "static")
STATIC_DECODINGS_KEPT = 2  # static caches (each with its CUDA graph) kept per model: the shapes used most recently


@dataclass
class LM4LVGenerateOutput(ModelOutput):
    r"""
    Output of [`LM4LVForConditionalGeneration.generate`].

    Args:
        sequences (`torch.LongTensor` of shape `(batch_size, prompt_length + generated_length)`):
            Prompt and generated ids. Generated visual positions hold `config.image_token_id` (negative; the
            processor's `batch_decode` skips them); positions after a sample finished hold the pad id.
        visual_features (`torch.FloatTensor` of shape `(batch_size, num_visual_tokens, vision_hidden_size)`):
            Generated MAE features of the first image of each sample; NaN for a sample that produced no image.
        pixel_values (`torch.FloatTensor` of shape `(batch_size, num_channels, height, width)`):
            The MAE decoder's reconstruction of `visual_features`, normalised like the processor's inputs; NaN
            for a sample that produced no image.
        has_image (`torch.BoolTensor` of shape `(batch_size,)`):
            Whether each sample produced a complete image.
    """

    sequences: torch.LongTensor | None = None
    visual_features: torch.FloatTensor | None = None
    pixel_values: torch.FloatTensor | None = None
    has_image: torch.BoolTensor | None = None


def positions_from_mask(attention_mask: torch.LongTensor) -> torch.LongTensor:
    """Position ids that start at 0 on each sample's first real token (left padding gets position 0)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def shift_left(queue: torch.LongTensor) -> torch.LongTensor:
    """Drop the first column of a `(batch, width)` queue and pad it with -1 on the right."""
    return torch.cat([queue[:, 1:], queue.new_full((queue.shape[0], 1), -1)], dim=1)


@dataclass
class GenerationState:
    r"""
    Per-sample state of one [`LM4LVForConditionalGeneration.generate`] call; every tensor has the batch first.

    Args:
        hidden: The LLM's last hidden state (after its final norm) at the newest position, `(batch, hidden_size)`.
        text_tail: The last `len(<Img>)` text tokens, to spot an emitted `<Img>`; -1 once an image starts.
        visual_left: Visual steps left in the current image (0 outside images).
        forced: `</Img>` ids still to emit, left-aligned, -1 where none.
        features: Generated features of the first image, `(batch, num_visual_tokens, vision_hidden_size)`, NaN
            until written.
        num_features: How many features of the first image are written.
        unfinished: Samples that have not emitted EOS.
        tokens: Emitted ids, one `(batch,)` tensor per step (`image_token_id` at visual steps).
    """

    hidden: torch.Tensor
    text_tail: torch.LongTensor
    visual_left: torch.LongTensor
    forced: torch.LongTensor
    features: torch.Tensor
    num_features: torch.LongTensor
    unfinished: torch.BoolTensor
    tokens: list[torch.LongTensor] = field(default_factory=list)

    def all_inside_first_image(self, num_visual_tokens: int) -> bool:
        """Whether every sample's next step is a visual step of its first image."""
        recording = (self.visual_left > 0) & self.unfinished & (self.num_features < num_visual_tokens)
        return bool(recording.all())


_GRAPH_POOL = []  # the memory pool of the visual-step graphs, made at the first capture


def shared_graph_pool():
    """The one memory pool the visual-step CUDA graphs share."""
    if not _GRAPH_POOL:
        _GRAPH_POOL.append(torch.cuda.graph_pool_handle())
    return _GRAPH_POOL[0]


class StaticDecoding:
    """A static KV cache and the buffers a captured visual step reads (the folded feedback weights, the padding
    mask), with the step's CUDA graph once captured; kept per model and call shape (`static_decoding`) so that a later
    `generate()` call of the shape resets the cache, refills the buffers and replays the same graph."""

    def __init__(self, config, max_cache_len: int):
        self.cache = StaticCache(config=config, max_cache_len=max_cache_len)
        self.buffers = {}
        self.graph = None

    def refill(self, name: str, tensor: torch.Tensor | None) -> torch.Tensor | None:
        """`tensor` copied into the buffer `name` (made at the first call): the buffer, at the same address every
        call."""
        if tensor is None:
            return None
        if name not in self.buffers:
            self.buffers[name] = tensor.clone()
        return self.buffers[name].copy_(tensor)


_STATIC_DECODINGS = weakref.WeakKeyDictionary()  # model -> OrderedDict(call shape -> StaticDecoding)


def static_decoding(model, shape: tuple, max_cache_len: int) -> StaticDecoding:
    """The model's `StaticDecoding` for a call `shape` (made at its first use), its cache reset; only the
    `STATIC_DECODINGS_KEPT` shapes used most recently are kept. The shape names the LLM's weight tensors, so moving or
    re-casting the model starts afresh."""
    kept = _STATIC_DECODINGS.setdefault(model, OrderedDict())
    if shape not in kept:
        kept[shape] = StaticDecoding(model.language_model.config, max_cache_len)
    kept.move_to_end(shape)
    while len(kept) > STATIC_DECODINGS_KEPT:
        kept.popitem(last=False)
    kept[shape].cache.reset()
    return kept[shape]


class VisualStepGraph:
    r"""
    One visual step on a static cache, `backbone_at(feed_back(hidden), position)`, captured once as a CUDA graph over
    static buffers (the hidden state in, the skip embedding, the position; the cache's own tensors are static
    already) and replayed for every later visual token of the call, and of later calls of the same shape (`run` is
    then the current call's run, whose cache and feedback buffers are the captured ones). Before capture the step
    runs once eagerly on the capture's side stream (the warm-up: library state made lazily per stream, such as cuBLAS
    workspaces and SDPA plans, is made then, not during capture), and the cache's position counters are set back
    after it; capture records kernels without running them, so the cache and `run.length` move only at replays.
    """

    def __init__(self, run: "DecodingRun", hidden: torch.Tensor, skip_embedding: torch.Tensor | None):
        self.run = run
        self.hidden = hidden.clone()
        self.skip = None if skip_embedding is None else skip_embedding.clone()
        self.position = run.positions[:, run.length : run.length + 1].clone()
        self.stream = torch.cuda.Stream() if hidden.is_cuda else None
        self.warm_up()
        self.capture()

    def step(self) -> torch.Tensor:
        """The step on the static buffers."""
        return self.run.backbone_at(self.run.feed_back(self.hidden, self.skip)[:, None], self.position)

    def warm_up(self):
        """Run the step once eagerly on the capture's side stream, then set the cache's position counters back: the
        first replay writes the same position again."""
        counters = [layer.cumulative_length.clone() for layer in self.run.cache.layers]
        if self.stream is None:
            self.step()
        else:
            self.stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(self.stream):
                self.step()
            torch.cuda.current_stream().wait_stream(self.stream)
        for layer, counter in zip(self.run.cache.layers, counters):
            layer.cumulative_length.copy_(counter)

    def capture(self):
        """Record `step` as a CUDA graph on the side stream (its output buffer is `self.output`), in the memory pool
        every visual-step graph shares: they never run at the same time, and each keeps its output buffer."""
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, pool=shared_graph_pool(), stream=self.stream):
            self.output = self.step()

    def launch(self):
        """Run the recorded step once."""
        self.graph.replay()

    def replay(self, hidden: torch.Tensor, skip_embedding: torch.Tensor | None) -> torch.Tensor:
        """The step from `hidden` (and the skip embedding): the new last hidden state."""
        self.hidden.copy_(hidden)
        if self.skip is not None:
            self.skip.copy_(skip_embedding)
        self.position.copy_(self.run.positions[:, self.run.length : self.run.length + 1])
        self.launch()
        self.run.length += 1
        return self.output.clone()


class DecodingRun:
    """What stays fixed during one `generate()` call (delimiter ids, stop ids, budget, skip features), and the
    frozen LLM behind a KV cache: `feed(embeds)` runs new input embeddings after the cached ones."""

    graph_class = VisualStepGraph  # what captures the visual step on CUDA
    graphs_fail = False  # set when a capture or replay raised: this process then steps eagerly

    def __init__(self, model, start_ids, end_ids, forced_start_length, max_new_tokens, eos_token_id, pad_token_id,
                 positions, full_mask, cache_implementation: str = "dynamic",
                 skip_features: torch.Tensor | None = None):
        self.model = model
        self.backbone = model.text_backbone
        self.embed_dtype = model.get_input_embeddings().weight.dtype
        self.static = cache_implementation == "static"
        self.length = 0  # positions in the cache, counted here (a static cache's own count is a device tensor)
        self.start_ids, self.end_ids, self.forced_start_length = start_ids, end_ids, forced_start_length
        self.max_new_tokens, self.eos_token_id, self.pad_token_id = max_new_tokens, eos_token_id, pad_token_id
        self.positions, self.full_mask = positions, full_mask
        self.skip_features = skip_features  # the prompt images' features, with `visual_skip_connection`
        # the visual feedback in_adapter(out_adapter(hidden) + skip) folded into one affine map (one small matmul)
        self.feedback_weight = model.in_adapter.weight @ model.out_adapter.weight
        self.feedback_bias = model.in_adapter(model.out_adapter.bias)
        # forced </Img> tokens may go through the LLM in one piece when none of them ends the text
        self.end_can_be_fed_at_once = eos_token_id not in end_ids.tolist()
        self.decoding = None  # the static cache's StaticDecoding (reused across calls of one shape)
        if self.static:
            self.use_static_decoding()
        else:
            self.cache = DynamicCache(config=model.language_model.config)

    def use_static_decoding(self):
        """Take the model's `StaticDecoding` for this call's shape (batch and budget, padding, skip connection,
        dtype, the LLM's weight tensors): its reset cache, and its buffers refilled with this call's feedback
        weights and padding mask, which a graph captured by an earlier call reads."""
        shape = (tuple(self.positions.shape), self.full_mask is None, self.skip_features is None, self.embed_dtype,
                 tuple(parameter.data_ptr() for parameter in self.backbone.parameters()))
        self.decoding = static_decoding(self.model, shape, self.positions.shape[1])
        self.cache = self.decoding.cache
        self.feedback_weight = self.decoding.refill("feedback_weight", self.feedback_weight)
        self.feedback_bias = self.decoding.refill("feedback_bias", self.feedback_bias)
        self.full_mask = self.decoding.refill("full_mask", self.full_mask)

    @classmethod
    def start(cls, model, attention_mask, max_new_tokens, eos_token_id, pad_token_id, force_image_output: bool,
              cache_implementation: str | None = None, skip_features: torch.Tensor | None = None):
        """The run for a prompt batch, with `generate()`'s defaults; a forced `<Img>` comes out of the budget.
        `skip_features` are the prompt images' features when the model has `visual_skip_connection`."""
        config = model.config
        if not config.image_start_token_ids or not config.image_end_token_ids:
            raise ValueError(
                "config.image_start_token_ids / image_end_token_ids are not set: build the model with "
                "from_base_models, or call config.set_image_delimiter_ids(tokenizer) (LM4LVProcessor.from_config("
                "config, tokenizer) does) first"
            )
        device = attention_mask.device
        if cache_implementation is None:
            cache_implementation = "static" if device.type == "cuda" else "dynamic"
        if cache_implementation not in CACHE_IMPLEMENTATIONS:
            raise ValueError(f"cache_implementation must be one of {CACHE_IMPLEMENTATIONS}, got "
                             f"{cache_implementation!r}")
        start_ids = torch.tensor(config.image_start_token_ids, device=device)
        end_ids = torch.tensor(config.image_end_token_ids, device=device)
        if max_new_tokens is not None and (type(max_new_tokens) is not int or max_new_tokens < 1):
            raise ValueError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
        if max_new_tokens is None:
            max_new_tokens = len(start_ids) + config.num_visual_tokens + len(end_ids) + 8
        if eos_token_id is None:
            eos_token_id = getattr(model.language_model.generation_config, "eos_token_id", None)
            eos_token_id = eos_token_id[0] if isinstance(eos_token_id, list) else eos_token_id
        if pad_token_id is None:
            pad_token_id = eos_token_id if eos_token_id is not None else 0
        # positions of the prompt and of every token still to come; without left padding no mask is needed
        full_mask = torch.cat([attention_mask, attention_mask.new_ones(attention_mask.shape[0], max_new_tokens)], 1)
        positions = positions_from_mask(full_mask)
        full_mask = None if bool(attention_mask.all()) else full_mask
        forced_start_length = min(len(start_ids), max_new_tokens) if force_image_output else 0
        return cls(model, start_ids, end_ids, forced_start_length, max_new_tokens - forced_start_length, eos_token_id,
                   pad_token_id, positions, full_mask, cache_implementation, skip_features)

    def feed_back(self, hidden: torch.Tensor, skip_embedding: torch.Tensor | None = None) -> torch.Tensor:
        """THE visual feedback of every decoding path: the next input embedding `in_adapter(out_adapter(hidden) +
        skip)` of the last hidden states `(batch, hidden)`, with `skip_embedding = in_adapter.weight @ skip` (the
        skip connection's input features; `None` without it), in the LLM's dtype."""
        pending = F.linear(hidden.float(), self.feedback_weight, self.feedback_bias)
        if skip_embedding is not None:
            pending = pending + skip_embedding
        return pending.to(self.embed_dtype)

    def feed(self, embeds: torch.Tensor) -> torch.Tensor:
        """Input embeddings `(batch, k, hidden)` through the LLM after the cached ones (of the first `batch` rows);
        the new last hidden state."""
        past = self.length
        self.length += embeds.shape[1]
        return self.backbone_at(embeds, self.positions[: embeds.shape[0], past : self.length])

    def feed_prompt(self, input_ids: torch.LongTensor, inputs_embeds: torch.Tensor) -> torch.Tensor:
        """The prompt batch through the LLM; the last hidden states. The text every row starts with
        (`shared_prefix_length`: the template before the first image) goes through once and its cache is repeated for
        the batch."""
        shared = self.shared_prefix_length(input_ids)
        if shared:
            self.feed(inputs_embeds[:1, :shared])
            self.cache.batch_repeat_interleave(input_ids.shape[0])
        return self.feed(inputs_embeds[:, shared:])

    def shared_prefix_length(self, input_ids: torch.LongTensor) -> int:
        """How many leading prompt positions every row shares: the same token ids, none of them an image or task
        placeholder (whose embeddings differ by row). 0 where the prompt cannot be split: a single row, left
        padding, or a static cache (whose call shape and CUDA graph stay fixed). One read of a count, per call."""
        if self.static or self.full_mask is not None or input_ids.shape[0] == 1:
            return 0
        config = self.model.config
        plain = (input_ids == input_ids[:1]).all(0)
        plain &= ((input_ids != config.image_token_id) & (input_ids != config.task_token_id)).all(0)
        return min(int(plain.long().cumprod(0).sum()), input_ids.shape[1] - 1)

    def backbone_at(self, embeds: torch.Tensor, position_ids: torch.LongTensor) -> torch.Tensor:
        """The LLM on `embeds` at `position_ids`, appending to the cache (whose mask covers the whole static cache,
        or the positions so far); the last hidden state."""
        mask = self.full_mask
        if mask is not None and not self.static:
            mask = mask[:, : self.length]
        return self.backbone(inputs_embeds=embeds, attention_mask=mask, position_ids=position_ids, cache=self.cache,
                             use_cache=True).last_hidden_state[:, -1]

    def visual_step(self, hidden: torch.Tensor, skip_embedding: torch.Tensor | None = None) -> torch.Tensor:
        """One visual step, `feed(feed_back(hidden))`: through the CUDA graph on a static cache on CUDA (captured at
        the first visual step of the first call of this shape), eagerly otherwise, and eagerly for the rest of the
        process once a capture or replay raised (with one warning): an optimisation never fails a generation."""
        if self.uses_graph(hidden):
            try:
                if self.decoding.graph is None:
                    self.decoding.graph = self.graph_class(self, hidden, skip_embedding)
                self.decoding.graph.run = self
                return self.decoding.graph.replay(hidden, skip_embedding)
            except RuntimeError as error:
                DecodingRun.graphs_fail = True
                warnings.warn(f"The visual step's CUDA graph failed ({error}); generating eagerly on the static "
                              "cache from now on", RuntimeWarning, stacklevel=2)
        return self.feed(self.feed_back(hidden, skip_embedding)[:, None])

    def uses_graph(self, hidden: torch.Tensor) -> bool:
        """Whether visual steps replay a CUDA graph: on a static cache, on CUDA, unless a graph failed before."""
        return self.static and hidden.is_cuda and not DecodingRun.graphs_fail

    def skip_inputs(self, rows: torch.LongTensor, slots: torch.LongTensor) -> tuple:
        """`(skip features, skip embedding)` of the visual tokens at `slots` of each row (`in_adapter.weight @ skip`,
        what `feed_back` adds), or `(None, None)` without the skip connection."""
        if self.skip_features is None:
            return None, None
        skip = self.skip_features[rows, slots]
        return skip, F.linear(skip, self.model.in_adapter.weight)

    # ------------------------------------------------------------------ the loop's steps

    def decode(self, input_ids: torch.LongTensor, inputs_embeds: torch.Tensor) -> LM4LVGenerateOutput:
        """The whole generation from a prompt batch (with a forced `<Img>` already appended): prefill, then visual
        runs while every sample is inside its first image, and mixed steps otherwise, until the budget or EOS; then
        the output (`output`)."""
        state = self.prefill(input_ids, inputs_embeds)
        while len(state.tokens) < self.max_new_tokens:
            if state.all_inside_first_image(self.model.config.num_visual_tokens):
                self.visual_run(state)
            elif self.text_step(state):
                break
        return self.output(input_ids, state)

    def output(self, input_ids: torch.LongTensor, state: GenerationState) -> LM4LVGenerateOutput:
        """A finished decoding's sequences, features and decoded images (NaN for samples without a complete image)."""
        model = self.model
        has_image = state.num_features == model.config.num_visual_tokens
        pixel_values = torch.full(
            (input_ids.shape[0], model.config.vision_config.num_channels, *model.vision_model.image_size),
            float("nan"),
            device=input_ids.device,
        )
        if has_image.any():
            pixel_values[has_image] = model.decode_features(state.features[has_image])
        return LM4LVGenerateOutput(
            sequences=torch.cat([input_ids, torch.stack(state.tokens, dim=1)], dim=1) if state.tokens else input_ids,
            visual_features=state.features,
            pixel_values=pixel_values,
            has_image=has_image,
        )

    def prefill(self, input_ids: torch.LongTensor, inputs_embeds: torch.Tensor) -> GenerationState:
        """The prompt (with a forced `<Img>`) through the LLM; the state of every sample after it."""
        config = self.model.config
        batch_size, device = input_ids.shape[0], input_ids.device
        text_tail = input_ids[:, -len(self.start_ids) :].clone()
        visual_left = torch.where((text_tail == self.start_ids).all(-1), config.num_visual_tokens, 0)
        text_tail[visual_left > 0] = -1
        return GenerationState(
            hidden=self.feed_prompt(input_ids, inputs_embeds),
            text_tail=text_tail,
            visual_left=visual_left,
            forced=torch.full((batch_size, len(self.end_ids)), -1, dtype=torch.long, device=device),
            features=torch.full(
                (batch_size, config.num_visual_tokens, config.vision_hidden_size), float("nan"), device=device
            ),
            num_features=torch.zeros(batch_size, dtype=torch.long, device=device),
            unfinished=torch.ones(batch_size, dtype=torch.bool, device=device),
        )

    def visual_run(self, state: GenerationState):
        """Every sample is inside its first image: the visual steps they all still have, in a tight loop with no
        text bookkeeping and no host-device synchronisation (`visual_step` a step: a CUDA graph replay on a static
        cache on CUDA; the features come from one `out_adapter` call over the whole run afterwards). When every
        image ends here, the forced `</Img>` goes through the LLM with the last visual token."""
        model = self.model
        steps = min(int(state.visual_left.min()), self.max_new_tokens - len(state.tokens))
        rows = torch.arange(state.hidden.shape[0], device=state.hidden.device)
        slots = state.num_features[:, None] + torch.arange(steps, device=rows.device)
        skip, skip_embedding = self.skip_inputs(rows[:, None], slots)
        hiddens = [state.hidden]
        for step in range(steps - 1):
            hiddens.append(self.visual_step(hiddens[-1], None if skip is None else skip_embedding[:, step]))
        pending = self.feed_back(hiddens[-1], None if skip is None else skip_embedding[:, steps - 1])[:, None]
        features = model.out_adapter(torch.stack(hiddens, dim=1).float())
        state.features[rows[:, None], slots] = features if skip is None else features + skip
        state.num_features = state.num_features + steps
        state.visual_left = state.visual_left - steps
        state.tokens.extend([torch.full_like(state.num_features, model.config.image_token_id)] * steps)
        if self.end_can_be_fed_at_once and bool((state.visual_left == 0).all()):
            end = self.end_ids[: self.max_new_tokens - len(state.tokens)].expand(rows.shape[0], -1)
            state.tokens.extend(end.unbind(1))
            state.text_tail = torch.cat([state.text_tail, end], dim=1)[:, -len(self.start_ids) :]
            pending = torch.cat([pending, model.get_input_embeddings()(end)], dim=1)
        else:
            state.forced[state.visual_left == 0, : len(self.end_ids)] = self.end_ids
        if len(state.tokens) < self.max_new_tokens:
            state.hidden = self.feed(pending)

    def text_step(self, state: GenerationState) -> bool:
        """One step for a batch that mixes text and visual samples: emits a token per sample (`image_token_id` for
        visual ones, a forced `</Img>` id, or the greedy text token), records predicted features, spots `<Img>` and
        EOS, and feeds the next input. Returns whether generation is over."""
        model, config = self.model, self.model.config
        is_visual = (state.visual_left > 0) & state.unfinished
        recording = is_visual & (state.num_features < config.num_visual_tokens)
        is_text = ~is_visual & state.unfinished
        has_forced = state.forced[:, 0] >= 0
        if bool((has_forced | is_visual).all()):  # no LM head needed: every token is forced or visual
            token = state.forced[:, 0]
        else:
            token = torch.where(has_forced, state.forced[:, 0], model.get_output_embeddings()(state.hidden).argmax(-1))
        token = torch.where(is_visual, config.image_token_id, torch.where(state.unfinished, token, self.pad_token_id))
        next_embeds = model.get_input_embeddings()(token.clamp(min=0))
        if bool(is_visual.any()):
            rows = torch.arange(token.shape[0], device=token.device)
            slot = state.num_features.clamp(max=config.num_visual_tokens - 1)
            skip, skip_embedding = self.skip_inputs(rows, slot)
            feature = model.out_adapter(state.hidden.float())
            feature = feature if skip is None else feature + skip
            state.features[rows, slot] = torch.where(recording[:, None], feature, state.features[rows, slot])
            next_embeds = torch.where(is_visual[:, None], self.feed_back(state.hidden, skip_embedding), next_embeds)
        state.num_features = state.num_features + recording.long()
        state.forced = torch.where((is_text & has_forced)[:, None], shift_left(state.forced), state.forced)
        state.visual_left = state.visual_left - is_visual.long()
        state.forced[is_visual & (state.visual_left == 0), : len(self.end_ids)] = self.end_ids
        tail = torch.cat([state.text_tail[:, 1:], token[:, None]], 1)
        state.text_tail = torch.where(is_text[:, None], tail, state.text_tail)
        image_starts = is_text & (state.text_tail == self.start_ids).all(-1)
        state.visual_left = torch.where(image_starts, config.num_visual_tokens, state.visual_left)
        state.text_tail[image_starts] = -1
        if self.eos_token_id is not None:
            state.unfinished = state.unfinished & ~(is_text & (token == self.eos_token_id))
        state.tokens.append(token)
        if len(state.tokens) == self.max_new_tokens or not bool(state.unfinished.any()):
            return True
        state.hidden = self.feed(next_embeds[:, None])
        return False
