"""LM4LV model configuration.

The configs are strict dataclasses, declared like transformers' own: every field's type (with `Literal` choices) is
checked on construction, on loading and on assignment, and the `validate_*` methods check values. A field whose
metadata has a `"help"` text is also a training option: `lm4lv train` derives its flags (type, choices, default,
help) from it, and passes it on to the config (`trainers.training.ModelArguments`).
"""

from dataclasses import field
from typing import Literal

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

DERIVED_FIELDS = ("num_visual_tokens", "vision_hidden_size")  # read from vision_config, never set
MAX_TASK_TOKEN_LENGTH = 4096  # the paper uses 10; more is refused before the task tokens are allocated


# where transformers records a sub-config was read from (a folder, a Hub id, a GGUF file's model name)
SUB_CONFIG_ORIGINS = ("_name_or_path", "_model_name_or_path")


def image_size_pair(image_size) -> tuple[int, int]:
    """`(height, width)` of a config's `image_size` (an int for square images, or a pair)."""
    return tuple(image_size) if isinstance(image_size, (list, tuple)) else (image_size, image_size)


def option(default, help: str):
    """A config field that is also a training option (`lm4lv train --NAME`), with its help text."""
    return field(default=default, metadata={"help": help})


@strict
class LM4LVConfig(PreTrainedConfig):
    r"""
    Configuration of an [`LM4LVForConditionalGeneration`]: a frozen causal language model (`text_config`), a frozen
    reconstruction-faithful vision module (`vision_config`, a ViT-MAE used without masking), two linear adapters
    between them and a few trainable task tokens per task.

    Args:
        text_config (`dict` or `PreTrainedConfig`, *optional*):
            Config of the causal LM (any model that `AutoModelForCausalLM` builds). Defaults to a LLaMA config.
        vision_config (`dict`, `ViTMAEConfig` or [`DiffusersAutoencoderConfig`], *optional*):
            Config of the vision module: a ViT-MAE (the default; its `mask_ratio` is forced to 0, every patch is
            kept, in order) or a diffusers autoencoder.
        task_names (`list[str]`, *optional*, defaults to `["denoise"]`):
            Names of the tasks; each gets its own `task_token_length` trainable embeddings, adapters are shared.
        task_token_length (`int`, *optional*, defaults to 10):
            Number of task tokens per task.
        task_token_init (`str`, *optional*, defaults to `"zeros"`):
            Initialisation of the task tokens: `"zeros"` (the authors' choice), `"random"` (normal, std of the
            LLM's `initializer_range`) or `"text"` (the LLM's embeddings of `task_token_init_text`, repeated or cut to
            `task_token_length`, like peft's `PromptTuningInit.TEXT`; applied by `from_base_models`, which has the
            tokenizer).
        task_token_init_text (`str`, *optional*):
            The text for `task_token_init="text"`, e.g. `"remove the noise from this image"`.
        vision_loss_weight (`float`, *optional*, defaults to 1.0):
            Weight of the MSE on visual positions in `loss = text_loss + vision_loss_weight * vision_loss`.
        delimiter_loss_weight (`float`, *optional*, defaults to 1.0):
            Weight of the cross-entropy on the answer's `<Img>`/`</Img>` tokens inside `text_loss` (the mean over the
            answer's text tokens); `generate()` forces those tokens anyway, and at initialisation their loss
            dominates the task tokens' gradient. 1.0 is the paper's plain cross-entropy.
        in_adapter_init (`str`, *optional*, defaults to `"normal"`):
            Initialisation of `in_adapter`: `"normal"` (the paper; std of the LLM's `initializer_range`) or
            `"embedding_subspace"`, which rotates the vision features' principal axes onto the top principal axes of
            the LLM's token embeddings, total variance matched and the mean feature onto the mean embedding, so
            visual tokens start out looking like token embeddings to the frozen LLM (applied by
            `lm4lv.modeling_lm4lv.initialization.init_in_adapter_from_features`, which needs sample features).
        out_adapter_init (`str`, *optional*, defaults to `"normal"`):
            Initialisation of `out_adapter`: `"normal"` (the paper) or `"ridge"`, the closed-form ridge regression from
            the LLM's hidden states to the target features on teacher-forced training sequences (applied by
            `lm4lv.modeling_lm4lv.initialization.init_out_adapter_by_ridge`, which needs sample states and targets).
        teacher_forced_noise (`float`, *optional*, defaults to 0.0):
            Standard deviation of Gaussian noise added in training to the target features the answer is fed as
            teacher-forced inputs (the loss targets stay clean), so the model learns to predict from imperfect
            previous tokens as it must in `generate()`. In feature units (a ViT-MAE's features are layer-normed, of
            about unit scale per dimension). 0 is the paper's plain teacher forcing.
        pixel_loss_weight (`float`, *optional*, defaults to 0.0):
            Weight of an extra MSE in pixel space: the predicted features are decoded by the frozen vision decoder
            and compared with the normalised target image (`loss += pixel_loss_weight * pixel_loss`). 0 is the
            paper's feature loss alone.
        visual_skip_connection (`bool`, *optional*, defaults to `False`):
            An extension beyond the paper (which names skip connections as a remedy for lost detail): each predicted
            visual feature is `input feature + out_adapter(hidden)`, where the input feature is the degraded image's
            feature at the same position, and `out_adapter` starts at zero, so an untrained model reproduces MAE-r.
            Needs exactly one input image per prompt. Off by default (the paper's method).
        lora_r (`int`, *optional*, defaults to 0):
            Rank of optional LoRA adapters on the LLM (through peft); 0 (the paper) keeps the LLM entirely frozen.
        lora_alpha (`int`, *optional*, defaults to 16):
            LoRA scaling numerator (`scale = lora_alpha / lora_r`).
        lora_target_modules (`list[str]`, *optional*):
            Module names that get LoRA adapters; default: peft's choice for the LLM's architecture (e.g. `q_proj`
            and `v_proj` for LLaMA).
        image_start_text (`str`, *optional*, defaults to `"<Img>"`):
            Plain text (tokenised like any words) that opens a run of visual tokens.
        image_end_text (`str`, *optional*, defaults to `"</Img>"`):
            Plain text that closes a run of visual tokens.
        image_start_token_ids (`list[int]`, *optional*):
            Token ids of `image_start_text` under the LLM's tokenizer; set by [`set_image_delimiter_ids`] (which
            `from_base_models` and the processor call).
            `generate()` switches to visual mode after emitting them.
        image_end_token_ids (`list[int]`, *optional*):
            Token ids of `image_end_text`; forced after each run of visual tokens.
        image_token_id (`int`, *optional*, defaults to -200):
            Placeholder id marking visual positions in `input_ids`. Negative so it never collides with the LLM's
            vocabulary (the LLM's embedding matrix is frozen and is never resized).
        task_token_id (`int`, *optional*, defaults to -300):
            Placeholder id marking task-token positions in `input_ids`.
        text_model_name_or_path (`str`, *optional*):
            Hub id or local folder of the base LLM; `from_pretrained` of a trainable-only checkpoint loads it.
        vision_model_name_or_path (`str`, *optional*):
            Hub id or local folder of the vision module (e.g. a decoder-fine-tuned ViT-MAE).
        unfrozen_parameters (`list[str]`, *optional*):
            Frozen-by-default parameters a user unfroze (set by `save_pretrained`, in both checkpoint formats);
            loading the checkpoint unfreezes them again.

    Example:

    ```python
    >>> from transformers import LlamaConfig, ViTMAEConfig
    >>> from lm4lv import LM4LVConfig, LM4LVForConditionalGeneration

    >>> config = LM4LVConfig(
    ...     text_config=LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
    ...                             num_attention_heads=4, num_key_value_heads=2, vocab_size=300),
    ...     vision_config=ViTMAEConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
    ...                                num_attention_heads=2, intermediate_size=64, decoder_hidden_size=32,
    ...                                decoder_num_hidden_layers=1, decoder_num_attention_heads=2,
    ...                                decoder_intermediate_size=64),
    ...     task_names=["denoise", "deblur"],
    ... )
    >>> model = LM4LVForConditionalGeneration(config)
    >>> config.num_visual_tokens
    17
    ```"""

    model_type = "lm4lv"
    sub_configs_defaults = {
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="llama"),
        "vision_config": SubConfigSpec(config_class=AutoConfig, model_type="vit_mae"),
    }

    text_config: dict | PreTrainedConfig | None = None
    vision_config: dict | PreTrainedConfig | None = None
    task_names: list[str] | None = None
    task_token_length: int = option(10, "Task tokens per task.")
    task_token_init: Literal["zeros", "random", "text"] = option("zeros", "zeros (the authors), random or text.")
    task_token_init_text: str | None = option(
        None, "Text whose embeddings initialise the task tokens (--task_token_init text).")
    vision_loss_weight: float = option(1.0, "loss = CE + weight * MSE.")
    delimiter_loss_weight: float = option(
        1.0, "Weight of the CE on the answer's <Img>/</Img> tokens, which generate() forces.")
    in_adapter_init: Literal["normal", "embedding_subspace"] = option(
        "normal", "normal (the paper) or embedding_subspace (features mapped onto the token embeddings' principal "
                  "subspace, fitted on the first 256 training images).")
    out_adapter_init: Literal["normal", "ridge"] = option(
        "normal", "normal (the paper) or ridge (closed-form ridge fit of out_adapter on teacher-forced sequences of "
                  "the first 256 training pairs, before the first step).")
    teacher_forced_noise: float = option(
        0.0, "Std of Gaussian noise on the teacher-forced answer features in training (0 = paper).")
    pixel_loss_weight: float = option(
        0.0, "Weight of an extra pixel MSE through the frozen vision decoder (0 = paper).")
    visual_skip_connection: bool = option(
        False, "Extension: predict input feature + out_adapter(hidden) (off = paper).")
    lora_r: int = option(0, "LoRA rank on the LLM through peft; 0 (the paper) = frozen.")
    lora_alpha: int = option(16, "LoRA alpha (scale = alpha / r).")
    lora_target_modules: list[str] | None = None
    image_start_text: str = "<Img>"
    image_end_text: str = "</Img>"
    image_start_token_ids: list[int] | None = None
    image_end_token_ids: list[int] | None = None
    image_token_id: int = -200
    task_token_id: int = -300
    text_model_name_or_path: str | None = None
    vision_model_name_or_path: str | None = None
    unfrozen_parameters: list[str] | None = None
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        check_no_derived_fields(kwargs, "LM4LVConfig")
        super().__post_init__(**kwargs)
        if self.task_names is None:
            self.task_names = ["denoise"]
        # An MAE is used here as an autoencoder: every patch kept, in order. `random_masking` reads the ratio at
        # every call, so it must be 0 on the config the vision module holds.
        if self.vision_config.model_type == "vit_mae":
            self.vision_config.mask_ratio = 0.0

    def to_dict(self) -> dict:
        """transformers' dict, without where the sub-configs were read from (`_name_or_path`, and the GGUF file's
        model name `_model_name_or_path`): `text_model_name_or_path` and `vision_model_name_or_path` are the one place
        a checkpoint names its base models, so a saved config carries no other path of the machine that saved it."""
        output = super().to_dict()
        for key in ("text_config", "vision_config"):
            for name in SUB_CONFIG_ORIGINS:
                output[key].pop(name, None)
        return output

    @classmethod
    def get_config_dict(cls, pretrained_model_name_or_path, **kwargs):
        """The saved config's dict, refused with the file named when it is not a JSON object or lacks the base models'
        sub-configs (which would otherwise be replaced by defaults of another size)."""
        config_dict, kwargs = super().get_config_dict(pretrained_model_name_or_path, **kwargs)
        where = f"{pretrained_model_name_or_path}'s config.json"
        if not isinstance(config_dict, dict):
            raise ValueError(f"{where} holds a JSON {type(config_dict).__name__}, not an object of config fields")
        missing = [key for key in ("text_config", "vision_config") if not isinstance(config_dict.get(key), dict)]
        if missing:
            raise ValueError(
                f"{where} has no {' or '.join(missing)}: an LM4LV config holds the base LLM's config (text_config) "
                "and the vision module's (vision_config); save the model with save_pretrained to write both"
            )
        check_no_derived_fields(config_dict, where)
        return config_dict, kwargs

    def validate_lm4lv(self):
        """Raise a `ValueError` naming the field when a value cannot work (run by the strict dataclass after every
        construction, and by `validate()`)."""
        if not 1 <= self.task_token_length <= MAX_TASK_TOKEN_LENGTH:
            raise ValueError(f"task_token_length must be in [1, {MAX_TASK_TOKEN_LENGTH}], got {self.task_token_length}")
        if not self.task_names or len(set(self.task_names)) != len(self.task_names):
            raise ValueError(f"task_names must be a non-empty list of distinct names, got {self.task_names}")
        if self.task_token_init == "text" and not self.task_token_init_text:
            raise ValueError("task_token_init='text' needs task_token_init_text")
        if self.lora_r < 0:
            raise ValueError(f"lora_r must be >= 0, got {self.lora_r}")
        if self.vision_loss_weight < 0:
            raise ValueError(f"vision_loss_weight must be >= 0, got {self.vision_loss_weight}")
        if self.delimiter_loss_weight < 0:
            raise ValueError(f"delimiter_loss_weight must be >= 0, got {self.delimiter_loss_weight}")
        for name in ("teacher_forced_noise", "pixel_loss_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.image_token_id >= 0 or self.task_token_id >= 0 or self.image_token_id == self.task_token_id:
            raise ValueError("image_token_id and task_token_id must be distinct negative placeholder ids")
        for name in ("hidden_size", "image_size", "patch_size"):
            value = getattr(self.vision_config, name)
            if not all(v > 0 for v in (value if isinstance(value, (list, tuple)) else [value])):
                raise ValueError(f"vision_config.{name} must be positive, got {value}")
        self.check_num_visual_tokens()
        if self.text_config.hidden_size <= 0:
            raise ValueError(f"text_config.hidden_size must be positive, got {self.text_config.hidden_size}")

    @property
    def vision_hidden_size(self) -> int:
        """Width of one visual feature (the MAE encoder's hidden size)."""
        return self.vision_config.hidden_size

    @property
    def num_visual_tokens(self) -> int:
        """Visual tokens per image: for a ViT-MAE one per patch plus the CLS token (197 for a 224x224, patch-16 MAE);
        other vision configs say it themselves."""
        if self.vision_config.model_type != "vit_mae" and hasattr(self.vision_config, "num_visual_tokens"):
            return self.vision_config.num_visual_tokens
        height, width = image_size_pair(self.vision_config.image_size)
        return (height // self.vision_config.patch_size) * (width // self.vision_config.patch_size) + 1

    def check_num_visual_tokens(self):
        """A ViT-MAE's token count follows from its geometry: a `num_visual_tokens` its config carries must agree."""
        stated = getattr(self.vision_config, "num_visual_tokens", None)
        if self.vision_config.model_type == "vit_mae" and stated is not None and stated != self.num_visual_tokens:
            raise ValueError(
                f"vision_config.num_visual_tokens is {stated}, but this ViT-MAE (image_size "
                f"{self.vision_config.image_size}, patch_size {self.vision_config.patch_size}) has "
                f"{self.num_visual_tokens} (patches + CLS): remove num_visual_tokens from vision_config"
            )

    def set_image_delimiter_ids(self, tokenizer):
        """Set `image_start_token_ids` / `image_end_token_ids` to the ids `tokenizer` gives `image_start_text` /
        `image_end_text` (as the answer holds them: no special tokens), the one place these ids are computed. When
        they are set already they must equal those ids: a different tokenizer would make `generate()` miss `<Img>`."""
        for name, text in (("image_start_token_ids", self.image_start_text),
                           ("image_end_token_ids", self.image_end_text)):
            token_ids = tokenizer.encode(text, add_special_tokens=False)
            if not token_ids:
                raise ValueError(f"The tokenizer turns the image delimiter {text!r} into no tokens")
            current = getattr(self, name)
            if current is not None and list(current) != token_ids:
                raise ValueError(
                    f"config.{name} is {list(current)} but this tokenizer encodes it as {token_ids}: the tokenizer is "
                    "not the one of the LLM this config was built with"
                )
            setattr(self, name, token_ids)

    def task_index(self, task: str) -> int:
        """Index of `task` in `task_names`, with a clear error for an unknown name."""
        if task not in self.task_names:
            raise ValueError(f"Unknown task {task!r}: this model has task tokens for {self.task_names}")
        return self.task_names.index(task)


def check_no_derived_fields(fields: dict, where: str):
    """Refuse `DERIVED_FIELDS` among the given fields, naming the field and `where` it came from."""
    for name in DERIVED_FIELDS:
        if name in fields:
            raise ValueError(f"{where}: {name} is derived from vision_config and cannot be set; remove it")


@strict
class DiffusersAutoencoderConfig(PreTrainedConfig):
    r"""
    Config of a vision module built from a diffusers autoencoder (`AutoencoderKL` or `VQModel`): the encoder's
    latent at each spatial position is one visual token (no CLS token), the decoder turns latents back into pixels.

    Args:
        autoencoder_class (`str`, *optional*, defaults to `"AutoencoderKL"`): `"AutoencoderKL"` (features = the mode
            of the latent distribution) or `"VQModel"` (features = the latents before quantisation; the decoder
            quantises).
        autoencoder_config (`dict`, *optional*): The diffusers model's own config (`AutoencoderKL.load_config(...)`).
        image_size (`int`, *optional*, defaults to 32): Input height and width.
        num_channels (`int`, *optional*, defaults to 3): Image channels.
        image_mean, image_std (`list[float]`, *optional*, default to 0.5): The processor's normalisation; 0.5 / 0.5
            maps [0, 1] to the [-1, 1] range diffusers autoencoders work in.
    """

    model_type = "lm4lv_diffusers_autoencoder"

    autoencoder_class: Literal["AutoencoderKL", "VQModel"] = "AutoencoderKL"
    autoencoder_config: dict | None = None
    image_size: int = 32
    num_channels: int = 3
    image_mean: list[float] | None = None
    image_std: list[float] | None = None

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        self.autoencoder_config = dict(self.autoencoder_config or {})
        self.image_mean = list(self.image_mean or [0.5] * self.num_channels)
        self.image_std = list(self.image_std or [0.5] * self.num_channels)

    @property
    def patch_size(self) -> int:
        """Downsampling factor of the encoder: one visual token per `patch_size` x `patch_size` pixels."""
        return 2 ** (len(self.autoencoder_config.get("block_out_channels", [64])) - 1)

    @property
    def hidden_size(self) -> int:
        """Width of one visual token: the latent channels."""
        return self.autoencoder_config.get("latent_channels", 4)

    @property
    def num_visual_tokens(self) -> int:
        return (self.image_size // self.patch_size) ** 2


@strict
class TimmVisionConfig(PreTrainedConfig):
    r"""
    Config of a vision module whose encoder is a timm Vision Transformer (e.g. a MAE-pretrained timm ViT) and whose
    decoder is a ViT-MAE decoder (trained by decoder-only fine-tuning). Features: the CLS token plus one token per
    patch after the encoder's final norm, as for a ViT-MAE.

    Args:
        timm_model_name (`str`, *optional*, defaults to `"vit_base_patch16_224"`): timm architecture name.
        timm_kwargs (`dict`, *optional*): Extra `timm.create_model` arguments (e.g. `embed_dim`, `depth`,
            `num_heads` for a custom size).
        image_size (`int`, *optional*, defaults to 224), patch_size (`int`, *optional*, defaults to 16),
        hidden_size (`int`, *optional*, defaults to 768), num_channels (`int`, *optional*, defaults to 3):
            The encoder's geometry and width (checked against the timm model).
        decoder_hidden_size, decoder_num_hidden_layers, decoder_num_attention_heads, decoder_intermediate_size:
            The ViT-MAE decoder's size (defaults: MAE's 512 / 8 / 16 / 2048).
        image_mean, image_std (`list[float]`, *optional*): Normalisation; defaults to ImageNet's.
    """

    model_type = "lm4lv_timm_vit"

    timm_model_name: str = "vit_base_patch16_224"
    timm_kwargs: dict | None = None
    image_size: int = 224
    patch_size: int = 16
    hidden_size: int = 768
    num_channels: int = 3
    decoder_hidden_size: int = 512
    decoder_num_hidden_layers: int = 8
    decoder_num_attention_heads: int = 16
    decoder_intermediate_size: int = 2048
    image_mean: list[float] | None = None
    image_std: list[float] | None = None

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        self.timm_kwargs = dict(self.timm_kwargs or {})

    def decoder_config(self):
        """The `ViTMAEConfig` that sizes the decoder (and the patch geometry of its output)."""
        from transformers import ViTMAEConfig

        config = ViTMAEConfig(
            hidden_size=self.hidden_size, image_size=self.image_size, patch_size=self.patch_size,
            num_channels=self.num_channels, decoder_hidden_size=self.decoder_hidden_size,
            decoder_num_hidden_layers=self.decoder_num_hidden_layers,
            decoder_num_attention_heads=self.decoder_num_attention_heads,
            decoder_intermediate_size=self.decoder_intermediate_size, mask_ratio=0.0,
        )
        config._attn_implementation = "sdpa"  # the decoder is used standalone, outside a PreTrainedModel's dispatch
        return config


def training_options(config_class: type[PreTrainedConfig]) -> dict:
    """The fields of `config_class` that are training options (metadata with a `"help"` text), by name."""
    return {name: spec for name, spec in config_class.__dataclass_fields__.items() if "help" in spec.metadata}


__all__ = ["LM4LVConfig", "DiffusersAutoencoderConfig", "TimmVisionConfig"]
