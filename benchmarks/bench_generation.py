"""Generation benchmarks: LM4LV generate() vs a bare KV-cached loop, KV cache vs the authors' full recompute, batching.

    python -m benchmarks.bench_generation [--llm tiny|smollm2] [--quick]
"""

import argparse

import torch

from benchmarks.common import bare_decoding_loop, build_model, machine, prompt_batch, timed


@torch.no_grad()
def full_recompute(model, batch: dict, steps: int):
    """The authors' algorithm (batch 1, no cache): the whole sequence through the LLM at every visual step."""
    features = model.encode_images(batch["pixel_values"])
    embeds = model.build_inputs_embeds(batch["input_ids"], features, batch["task_ids"])
    start = model.get_input_embeddings()(torch.tensor([model.config.image_start_token_ids]))
    embeds = torch.cat([embeds, start], dim=1)
    for _ in range(steps):
        hidden = model.text_backbone(inputs_embeds=embeds, use_cache=False).last_hidden_state[:, -1]
        embeds = torch.cat([embeds, model.embed_visual(model.out_adapter(hidden))[:, None]], dim=1)
    return model.decode_features(torch.zeros(1, model.config.num_visual_tokens, model.config.vision_hidden_size))


def generation_steps(model) -> int:
    config = model.config
    return len(config.image_start_token_ids) + config.num_visual_tokens + len(config.image_end_token_ids)


def overhead(llm: str, side: int, repeats: int) -> tuple[float, float, float, float]:
    """(generate() s, bare loop s, vision encode + decode s, generate() / bare loop)."""
    model = build_model(llm, side)
    batch = prompt_batch(model, 1)
    steps = generation_steps(model)
    ours = timed(lambda: model.generate(**batch, max_new_tokens=steps), repeats)
    bare = timed(lambda: bare_decoding_loop(model, batch, steps - 1), repeats)
    vision = timed(lambda: model.decode_features(model.encode_images(batch["pixel_values"])), repeats)
    return ours, bare, vision, ours / bare


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--llm", choices=["tiny", "smollm2"], default="smollm2")
    parser.add_argument("--quick", action="store_true", help="Fewer sizes and repeats.")
    args = parser.parse_args(argv)
    repeats = 1 if args.quick else 3
    print(f"# Generation benchmarks ({args.llm}) on {machine()}\n")

    print("## 1. generate() vs bare KV-cached loop (batch 1, same number of LLM steps)\n")
    print("The bare loop does no vision work; the last column takes the MAE encode + decode (timed alone) out of "
          "generate().\n")
    print("| LLM | visual tokens | generate() s | bare loop s | MAE encode+decode s | ratio | ratio without MAE |\n"
          "| --- | --- | --- | --- | --- | --- | --- |")
    for llm in ["tiny", args.llm] if args.llm != "tiny" else ["tiny"]:
        for side in ([4, 14] if not args.quick else [4]):
            ours, bare, vision, ratio = overhead(llm, side, repeats)
            print(f"| {llm} | {side * side + 1} | {ours:.3f} | {bare:.3f} | {vision:.3f} | {ratio:.3f} | "
                  f"{(ours - vision) / bare:.3f} |", flush=True)

    print("\n## 2. KV cache vs the authors' full recompute (batch 1, same outputs)\n")
    print("| visual tokens | KV cache s | recompute s | speedup |\n| --- | --- | --- | --- |")
    for side in ([4, 8, 14] if not args.quick else [4]):
        model = build_model(args.llm, side)
        batch = prompt_batch(model, 1)
        ours = timed(lambda: model.generate(**batch, max_new_tokens=generation_steps(model)), repeats)
        slow = timed(lambda: full_recompute(model, batch, model.config.num_visual_tokens), 1)
        print(f"| {side * side + 1} | {ours:.3f} | {slow:.3f} | {slow / ours:.1f}x |", flush=True)

    print("\n## 3. Batch scaling (generate(), 197 visual tokens)\n")
    print("| batch | s per call | images/s |\n| --- | --- | --- |")
    model = build_model(args.llm, 14 if not args.quick else 4)
    for batch_size in ([1, 4, 16, 32] if not args.quick else [1, 4]):
        batch = prompt_batch(model, batch_size)
        seconds = timed(lambda: model.generate(**batch, max_new_tokens=generation_steps(model)), 1)
        print(f"| {batch_size} | {seconds:.2f} | {batch_size / seconds:.2f} |", flush=True)


if __name__ == "__main__":
    main()
