"""A small vision-language model built here, for the multimodal half of the product where no pretrained
vision encoder installs from the package index: the real SmolLM2-135M-Instruct language model, a small
randomly initialised SigLIP vision tower (64x64 images, 16 patches) and a LLaVA projector, saved as an
ordinary Hugging Face folder with its processor and a chat template that takes OpenAI-style content lists.
Transformers and vLLM both load LLaVA; real users point the service at a real VLM folder instead.

The vision tower knows nothing until trained: a fine-tune that must look at the image trains the projector
(and LoRA on the language model) on top of random but fixed visual features, which is enough for
colours and shapes (ENVIRONMENT.md: held-out accuracy 0.25 -> 1.0 on four colours).
"""

from __future__ import annotations

import json
from pathlib import Path

IMAGE_TOKEN = "<image>"
IMAGE_SIZE, PATCH_SIZE = 64, 16
IMAGE_SEQ_LENGTH = (IMAGE_SIZE // PATCH_SIZE) ** 2

# SmolLM2's ChatML template, with OpenAI-style content lists: an image part becomes the image token, which
# the processor expands to IMAGE_SEQ_LENGTH tokens.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
    "<|im_end|>\n' }}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] in ('image', 'image_url') %}{{ '<image>' }}"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def build_llava_smollm2(target: Path, language_model: Path, seed: int = 0) -> Path:
    """Build the test VLM at `target` from the SmolLM2 folder `language_model` (deterministic for a seed)."""
    import torch
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        SiglipVisionConfig,
    )

    # The PIL image processor: the default one needs torchvision, which the CPU install removes.
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    from service.models.folders import model_folder

    tokenizer = AutoTokenizer.from_pretrained(language_model)
    tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    language = AutoModelForCausalLM.from_pretrained(language_model, dtype=torch.float32)
    config = LlavaConfig(
        vision_config=SiglipVisionConfig(
            image_size=IMAGE_SIZE,
            patch_size=PATCH_SIZE,
            hidden_size=192,
            intermediate_size=768,
            num_hidden_layers=2,
            num_attention_heads=3,
            vision_use_head=False,
        ),
        text_config=language.config,
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        image_seq_length=IMAGE_SEQ_LENGTH,
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        tie_word_embeddings=language.config.tie_word_embeddings,
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config)
    model.model.language_model.load_state_dict(language.model.state_dict())
    model.lm_head.load_state_dict(language.lm_head.state_dict())
    model.resize_token_embeddings(len(tokenizer))
    model = model.to(torch.bfloat16)
    processor = LlavaProcessor(
        image_processor=SiglipImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}),
        tokenizer=tokenizer,
        patch_size=PATCH_SIZE,
        vision_feature_select_strategy="full",
        chat_template=CHAT_TEMPLATE,
        image_token=IMAGE_TOKEN,
    )
    with model_folder(target) as tmp:
        model.save_pretrained(tmp)
        _name_the_vision_weights_as_vllm_expects(tmp)
        processor.save_pretrained(tmp)
        tokenizer.chat_template = CHAT_TEMPLATE
        tokenizer.save_pretrained(tmp)
        (tmp / "tuneserve.json").write_text(json.dumps({"built_from": str(language_model), "seed": seed}))
    return target


def _name_the_vision_weights_as_vllm_expects(folder: Path) -> None:
    """transformers saves the SigLIP tower's weights as `vision_tower.<...>`; vLLM's LLaVA loads them from
    `vision_tower.vision_model.<...>` (the layout of the published LLaVA checkpoints), and transformers
    loads that layout too."""
    from safetensors.torch import load_file, save_file

    for shard in folder.glob("*.safetensors"):
        tensors = load_file(shard)
        renamed = {
            (
                "vision_tower.vision_model." + key.removeprefix("vision_tower.")
                if key.startswith("vision_tower.") and not key.startswith("vision_tower.vision_model.")
                else key
            ): value
            for key, value in tensors.items()
        }
        save_file(renamed, shard, metadata={"format": "pt"})
